"""The ``tinystack`` command: ``up`` (foreground or ``-d``), ``down``, ``status``, ``image build``.

This module parses arguments, builds the settings with ``config.load`` and
says what happened in words; the process mechanics (pid file, liveness,
detaching, serving) are in ``runner.py``. It stays light to import: the
cloud, uvicorn and rich are imported only by the command that needs them, so
``tinystack up -d`` spends its time waiting for the child, not importing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tinystack import config, runner
from tinystack.config import ROLES

__all__ = ["build_parser", "main"]

CLOUD_NAMES = ("tinystack", "tinystack-admin", "tinystack-alt")
DEFAULT_CLOUDS_YAML = Path.home() / ".config" / "openstack" / "clouds.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def build_parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("where")
    group.add_argument("--config", type=Path, metavar="FILE",
                       help="TOML settings file (default: DATA_DIR/tinystack.toml if present)")
    group.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="data directory (default: /var/lib/tinystack)")
    group.add_argument("--host", help="address the API listens on (default: 127.0.0.1)")
    group.add_argument("--port", type=int, help="port every API shares (default: 8080)")

    parser = argparse.ArgumentParser(
        prog="tinystack",
        description="An OpenStack-compatible cloud small enough to start with one command.",
        epilog="Settings come from flags, then TINYSTACK_* environment variables, "
        "then the TOML file, then the defaults.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = commands.add_parser("up", parents=[where], help="start tinystack",
                             description="Start tinystack in the foreground, or detached with -d.")
    up.add_argument("-d", "--detach", action="store_true",
                    help="run in the background and return once /healthcheck answers")
    up.add_argument("--db", metavar="URL",
                    help="database URL: mysql://... or postgresql://... (default: SQLite in DATA_DIR)")
    up.add_argument("--bus", metavar="URL",
                    help="message bus: memory:// (default) or amqp://user:pw@host:5672/")
    up.add_argument("--role", action="append", choices=ROLES, metavar="ROLE",
                    help=f"node role to play, repeatable: {', '.join(ROLES)} (default: all)")
    up.add_argument("--node-name", metavar="NAME", help="name this node reports (default: host name)")
    up.add_argument("--clouds-yaml", type=Path, metavar="FILE",
                    help="clouds.yaml to write the tinystack entries into "
                    "(default: ~/.config/openstack/clouds.yaml)")
    up.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower)
    up.add_argument("--access-log", action="store_true", help="log every HTTP request")
    up.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                    help="with -d: how long to wait for /healthcheck (default: 60)")

    down = commands.add_parser("down", parents=[where], help="stop the running tinystack",
                               description="Stop the tinystack running on the data dir.")
    down.add_argument("--timeout", type=float, default=runner.STOP_TIMEOUT + 10,
                      metavar="SECONDS", help="seconds to wait after SIGTERM before SIGKILL")

    status = commands.add_parser("status", parents=[where], help="show what runs and whether it is healthy",
                                 description="Show the services and agents of the running "
                                 "tinystack; exit 1 if it is not running or not healthy.")
    status.add_argument("--json", action="store_true", help="print the raw /healthcheck body")

    image = commands.add_parser("image", help="the default guest image")
    image_commands = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = image_commands.add_parser(
        "build", parents=[where], help="build the default guest image (cached)",
        description="Build the guest image `tiny` from Debian packages into the guest cache "
        "the image service uploads it from, or find it there if it is built already.")
    build.add_argument("--cache-dir", type=Path, metavar="DIR",
                       help="default: the image.guest_cache_dir setting, else ~/.cache/tinystack/guest")
    build.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = _load_settings(args)
    except _SettingsError as exc:
        _err(f"invalid settings: {exc}")
        return 2
    command = {"up": _up, "down": _down, "status": _status, "image": _image}[args.command]
    try:
        return command(args, settings)
    except runner.RunnerError as exc:
        _err(str(exc))
        return 1
    except PermissionError as exc:
        _err(f"{exc.filename or exc}: permission denied; run as root or choose a --data-dir "
             "you can write to")
        return 1


class _SettingsError(Exception):
    pass


def _load_settings(args: argparse.Namespace):
    from pydantic import ValidationError

    if args.config is not None and not args.config.is_file():
        raise _SettingsError(f"config file {args.config} does not exist")
    flags: dict[str, Any] = {
        "data_dir": _absolute(args.data_dir),
        "host": args.host,
        "port": args.port,
    }
    if args.command == "up":
        flags.update(
            db=args.db, bus=args.bus, roles=_unique(args.role), node_name=args.node_name,
            clouds_yaml=_absolute(args.clouds_yaml), log_level=args.log_level,
        )
    try:
        return config.load(_absolute(args.config), **flags)
    except ValidationError as exc:
        raise _SettingsError(_describe_validation(exc)) from None
    except ValueError as exc:  # a TOML file that does not parse
        raise _SettingsError(f"{args.config or 'tinystack.toml in the data dir'}: {exc}") from None


def _describe_validation(exc) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().absolute()


def _unique(items: list[str] | None) -> list[str] | None:
    return None if items is None else list(dict.fromkeys(items))


def _err(message: str) -> None:
    if not message.startswith("tinystack"):
        message = f"tinystack: {message}"
    print(message, file=sys.stderr)


# -- up -------------------------------------------------------------------------


def _up(args: argparse.Namespace, settings) -> int:
    if not args.detach:
        runner.configure_logging(settings.log_level)
        return runner.serve(settings, access_log=args.access_log)
    pid = runner.running_pid(settings)
    if pid is not None:
        raise runner.AlreadyRunning(pid, settings.data_dir)
    runner.bind_socket(settings.host, settings.port, listen=False).close()
    process, offset = runner.start_detached(_child_argv(args), settings.log_file)
    url = runner.local_url(settings)
    try:
        runner.wait_until_healthy(url, process, settings.log_file, offset, timeout=args.timeout)
    except runner.StartFailed as exc:
        _err(str(exc))
        if exc.log_tail:
            print(f"--- last lines of {settings.log_file} ---", file=sys.stderr)
            print(exc.log_tail, file=sys.stderr)
        return 1
    _print_welcome(settings, url, process.pid)
    return 0


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The flags of this ``up -d`` for the foreground ``up`` it starts, paths made absolute."""
    argv = ["up"]
    for flag, value in (
        ("--config", _absolute(args.config)),
        ("--data-dir", _absolute(args.data_dir)),
        ("--host", args.host),
        ("--port", args.port),
        ("--db", args.db),
        ("--bus", args.bus),
        ("--node-name", args.node_name),
        ("--clouds-yaml", _absolute(args.clouds_yaml)),
        ("--log-level", args.log_level),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for role in _unique(args.role) or []:
        argv += ["--role", role]
    if args.access_log:
        argv.append("--access-log")
    return argv


def _print_welcome(settings, url: str, pid: int) -> None:
    print(f"tinystack is up at {url} (pid {pid}, roles {', '.join(settings.roles)})")
    print(f"  log:         {settings.log_file}")
    # only a controller wrote the clouds.yaml entries; a compute node's would be anyone's
    clouds = _read_clouds(settings.clouds_yaml) if "controller" in settings.roles else {}
    if clouds:
        print(f"  clouds.yaml: {settings.clouds_yaml}")
        width = max(len(name) for name in clouds)
        for name, cloud in clouds.items():
            print(f"    {name:<{width}}  {_describe_cloud(cloud)}")
    openrc = settings.data_dir / "openrc"
    if openrc.exists():
        print(f"  openrc:      {openrc}  (source it for the OS_* variables)")
    print()
    if "controller" in settings.roles:
        if clouds and settings.clouds_yaml.expanduser() != DEFAULT_CLOUDS_YAML:
            print(f"  export OS_CLIENT_CONFIG_FILE={settings.clouds_yaml}")
        admin = "tinystack-admin" if "tinystack-admin" in clouds or not clouds else next(iter(clouds))
        print(f"  openstack --os-cloud {admin} token issue")
    stop = "tinystack down"
    if settings.data_dir != type(settings).model_fields["data_dir"].default:
        stop += f" --data-dir {settings.data_dir}"
    print(f"  {stop}")


def _read_clouds(path: Path) -> dict[str, dict]:
    """The tinystack* entries of a clouds.yaml, in the usual order; {} if none."""
    import yaml

    try:
        data = yaml.safe_load(path.expanduser().read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    clouds = data.get("clouds") if isinstance(data, dict) else None
    if not isinstance(clouds, dict):
        return {}
    names = [n for n in CLOUD_NAMES if n in clouds]
    names += sorted(n for n in clouds if n.startswith("tinystack") and n not in names)
    return {n: clouds[n] if isinstance(clouds[n], dict) else {} for n in names}


def _describe_cloud(cloud: dict) -> str:
    auth = cloud.get("auth") or {}
    parts = []
    if auth.get("username"):
        parts.append(f"user {auth['username']}")
    if auth.get("project_name"):
        parts.append(f"project {auth['project_name']}")
    elif auth.get("system_scope"):
        parts.append(f"system scope {auth['system_scope']}")
    if auth.get("auth_url"):
        parts.append(f"at {auth['auth_url']}")
    return ", ".join(parts)


# -- down -----------------------------------------------------------------------


def _down(args: argparse.Namespace, settings) -> int:
    pid, killed = runner.stop_running(settings, timeout=args.timeout)
    if pid is None:
        print(f"tinystack is not running (data dir {settings.data_dir})")
    elif killed:
        print(f"tinystack (pid {pid}) did not stop within {args.timeout:.0f} s of SIGTERM; killed it")
    else:
        print(f"tinystack stopped (pid {pid})")
    return 0


# -- status ---------------------------------------------------------------------


def _status(args: argparse.Namespace, settings) -> int:
    pid = runner.running_pid(settings)
    explicit = args.host is not None or args.port is not None
    url = runner.instance_url(settings, prefer_settings=explicit)
    code, body = runner.get_health(url)
    if code is None:
        if pid is None:
            _err(f"tinystack is not running (data dir {settings.data_dir})")
        else:
            _err(f"tinystack (pid {pid}) does not answer at {url}")
        return 1
    if body is None:
        _err(f"{url}/healthcheck answered {code} without a JSON body")
        return 1
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        _print_status_table(url, pid, code, body)
    return 0 if code == 200 else 1


def _print_status_table(url: str, pid: int | None, code: int, body: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    roles = ", ".join(body.get("roles") or [])
    console.print(f"tinystack at {url}" + (f" (pid {pid})" if pid else "")
                  + f", node {body.get('node', '?')}, roles {roles}", highlight=False, soft_wrap=True)
    table = Table()
    for column in ("name", "kind", "node", "healthy"):
        table.add_column(column)
    rows = [*(body.get("services") or []), *(body.get("agents") or [])]
    for row in rows:
        healthy = bool(row.get("healthy"))
        table.add_row(
            str(row.get("name", "?")), str(row.get("kind", "?")), str(row.get("node", "?")),
            "[green]yes[/green]" if healthy else "[red]no[/red]",
        )
    if rows:
        console.print(table)
    else:
        console.print("no services or agents run here")
    if code != 200:
        console.print(f"[red]unhealthy[/red]: /healthcheck answered {code}")


# -- image build ----------------------------------------------------------------


def _image(args: argparse.Namespace, settings) -> int:
    from tinystack.image.default_image import guest_cache_dir
    from tinystack.image.guest import GuestBuildError, build_guest_image

    cache_dir = _absolute(args.cache_dir) or guest_cache_dir(settings)
    try:
        image = build_guest_image(cache_dir, progress=not args.quiet)
    except GuestBuildError as exc:
        _err(str(exc))
        return 1
    print(f"guest image {image.name} (build {image.cache_key}, kernel {image.kernel_version})")
    for label, path, fmt in (("kernel", image.kernel, image.kernel_disk_format),
                             ("ramdisk", image.ramdisk, image.ramdisk_disk_format),
                             ("disk", image.disk, image.disk_format)):
        print(f"  {label:<8} {path}  ({fmt}, {path.stat().st_size / 2**20:.1f} MiB)")
    print(f"  cmdline  {image.kernel_cmdline}")
    return 0
