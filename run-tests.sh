#!/usr/bin/env bash
# Run the whole test suite (unit, functional, e2e), installing what is missing.
#
#   ./run-tests.sh [pytest arguments...]     e.g. ./run-tests.sh tests/unit -x
#
# Makes sure the install is done (./install.sh --no-start), that the services
# the tests use answer on 127.0.0.1 (MariaDB 3306, PostgreSQL 5432, RabbitMQ
# 5672; each is started if it does not), then runs .venv/bin/pytest with the
# arguments given. Functional tests run on every database in
# TINYSTACK_TEST_DBS and e2e tests also with the bus on
# TINYSTACK_TEST_AMQP_URL (both described in tests/conftest.py); leave a
# service out of those to run without it:
#
#   TINYSTACK_TEST_DBS=sqlite TINYSTACK_TEST_AMQP_URL= ./run-tests.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

: "${TINYSTACK_TEST_DBS=sqlite,mysql://root@127.0.0.1:3306/test,postgresql://postgres@127.0.0.1:5432/test}"
: "${TINYSTACK_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/}"
export TINYSTACK_TEST_DBS TINYSTACK_TEST_AMQP_URL

say() { printf 'run-tests: %s\n' "$*" >&2; }

bash ./install.sh --no-start

answers() {  # host port
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

wait_until_answers() {  # name port seconds
    local deadline=$((SECONDS + $3))
    until answers 127.0.0.1 "$2"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "$1 does not answer on 127.0.0.1:$2 after $3 s"
            return 1
        fi
        sleep 0.2
    done
}

ensure_service() {  # name port command...
    local name=$1 port=$2
    shift 2
    if answers 127.0.0.1 "$port"; then
        return
    fi
    command -v "$1" >/dev/null 2>&1 || {
        say "$name is not running and $1 is not installed; install $name, or leave it out" \
            "of TINYSTACK_TEST_DBS / TINYSTACK_TEST_AMQP_URL"
        exit 1
    }
    say "starting $name"
    "$@" >/dev/null || say "starting $name said $?; waiting for it anyway"
    wait_until_answers "$name" "$port" 60 || exit 1
}

case ",$TINYSTACK_TEST_DBS," in *postgres*)
    ensure_service PostgreSQL 5432 pg_ctlcluster --skip-systemctl-redirect \
        "$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)" main start ;;
esac
case ",$TINYSTACK_TEST_DBS," in *mysql*|*mariadb*)
    ensure_service MariaDB 3306 start-stop-daemon --start --oknodo --background \
        --exec /usr/sbin/mariadbd ;;
esac
if [ -n "$TINYSTACK_TEST_AMQP_URL" ]; then
    ensure_service RabbitMQ 5672 rabbitmq-server -detached
fi

exec .venv/bin/pytest "$@"
