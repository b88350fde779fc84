#!/bin/sh
# tinystack guest init: the whole userland logic of the default image ("tiny"),
# run by busybox ash. Built into the image by tinystack/image/guest/ (read
# build.py there); a change here changes the image's cache key, so it rebuilds.
#
# One file, three roles, chosen by the name it runs under:
#   /init                              PID 1: mounts, modules, root disk, network,
#                                      instance data, sshd, acpid, then busybox init
#   /usr/share/udhcpc/default.script   udhcpc lease events: address, routes, MTU, DNS
#   /etc/acpi/PWRF/00000080            the ACPI power button: a clean poweroff
#
# Boot: the initramfs loads the modules listed in /lib/modules/$(uname -r)/load-order
# (dependencies first) and, when the kernel command line has root=DEV and DEV holds
# a tinystack guest tree, switch_roots to it so files persist; otherwise the guest
# runs from RAM. Then: DHCP on the first NIC; instance data from a config drive
# (ISO 9660 labelled config-2) if one is attached, else from the metadata service
# at 169.254.169.254 (OpenStack JSON, then EC2 paths); hostname, root's SSH keys,
# dropbear, acpid; one line on the console,
#   tinystack-guest ready: hostname=NAME addresses=10.0.0.5/24[,ADDR...] uptime=SECONDS
# (addresses=none without an address); a user-data script (#!) once per instance;
# and a root shell on the console for as long as the guest runs.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

RUN=/run/tinystack-guest        # this boot's instance data
STATE=/var/lib/tinystack-guest  # kept across reboots when there is a root disk
MD=http://169.254.169.254
FETCH_TIMEOUT=5                 # seconds per metadata request (busybox wget -T crashes)

say() { echo "tinystack-guest: $*"; }

mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }

# The value of NAME=VALUE on the kernel command line.
cmdline_value() {
	for word in $(cat /proc/cmdline); do
		case "$word" in "$1"=*) echo "${word#*=}"; return 0 ;; esac
	done
	return 1
}

mount_kernel_filesystems() {
	[ -e /proc/self ] || mount -t proc -o nosuid,nodev,noexec proc /proc
	[ -d /sys/kernel ] || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
	mounted /dev || mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
}

# The initramfs's modules; after switch_root, the copy it left in /run/modules.
module_dir() {
	dir=/lib/modules/$(uname -r)
	[ -d "$dir" ] || dir=/run/modules
	echo "$dir"
}

load_modules() {  # load_modules LIST: insmod the files LIST names, in its order
	dir=$(module_dir)
	[ -f "$dir/$1" ] || return 0
	while read -r ko; do
		name=${ko%.ko}
		name=${name//-/_}
		[ -d "/sys/module/$name" ] && continue
		insmod "$dir/$ko" || say "could not load module $ko"
	done < "$dir/$1"
}

# tinystack attaches a config drive over virtio only and says so in the SMBIOS
# (system manufacturer "tinystack", drivers/qemu.py): there the IDE CD-ROM driver,
# which probes for most of a second, is not needed. Elsewhere (Nova attaches a
# config drive as an IDE CD-ROM) it is loaded.
config_drive_on_virtio_only() {
	[ "$(cat /sys/class/dmi/id/sys_vendor 2>/dev/null)" = tinystack ]
}

# Wait up to 3 s for a block device named by root= (a path, LABEL= or UUID=).
find_root_device() {
	i=0
	while [ $i -lt 30 ]; do
		case "$1" in
		LABEL=*|UUID=*) dev=$(findfs "$1" 2>/dev/null) && { echo "$dev"; return 0; } ;;
		*) [ -b "$1" ] && { echo "$1"; return 0; } ;;
		esac
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# With root=DEV holding a tinystack guest tree: make it / and run its /init (no return).
switch_to_root_disk() {
	root=$(cmdline_value root) || return 0
	case "$root" in
	/dev/*|LABEL=*|UUID=*) ;;
	*) say "root=$root is not a device; running from RAM"; return 0 ;;
	esac
	if ! dev=$(find_root_device "$root"); then
		say "root=$root did not appear; running from RAM"
		return 0
	fi
	mkdir -p /newroot
	if ! mount -t ext4 -o rw,noatime "$dev" /newroot; then
		say "cannot mount $dev as ext4; running from RAM"
		return 0
	fi
	if [ ! -x /newroot/init ] || [ ! -f /newroot/etc/tinystack-guest-release ]; then
		umount /newroot
		say "$dev holds no tinystack guest; running from RAM"
		return 0
	fi
	say "root disk $dev"
	# The disk holds no modules (they must match the kernel): keep a copy of those
	# still to load (the CD-ROM group) for later.
	mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
	config_drive_on_virtio_only || cp -a "$(module_dir)" /run/modules
	for fs in dev proc sys run; do
		mount -o move "/$fs" "/newroot/$fs"
	done
	exec switch_root /newroot /init switched
}

mount_runtime_filesystems() {
	mkdir -p /dev/pts /dev/shm
	mounted /dev/pts || mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
	mounted /dev/shm || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
	mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
	mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
	mkdir -p "$RUN" "$STATE" /var/log /root
	chmod 0700 /root "$STATE"
}

# -- network --------------------------------------------------------------------

first_nic() {
	for path in /sys/class/net/*; do
		nic=${path##*/}
		[ "$nic" = lo ] && continue
		[ "$(cat "$path/type" 2>/dev/null)" = 1 ] || continue
		echo "$nic"
		return 0
	done
	return 1
}

start_network() {
	ip link set lo up
	nic=$(first_nic) || { say "no network interface"; return 0; }
	ip link set "$nic" up
	# -O staticroutes: dnsmasq sends option 121 (e.g. the metadata route) only if asked.
	udhcpc -i "$nic" -s /usr/share/udhcpc/default.script -t 10 -T 1 -n \
		-O staticroutes -O mtu \
		|| say "no DHCP lease on $nic"
}

prefix_of() {  # dotted netmask -> prefix length
	bits=0
	IFS=. read -r a b c d <<EOF
$1
EOF
	for octet in $a $b $c $d; do
		while [ "$octet" -gt 0 ]; do
			bits=$((bits + (octet & 1)))
			octet=$((octet >> 1))
		done
	done
	echo "$bits"
}

# udhcpc calls this with $1 = deconfig|bound|renew|leasefail|nak and the lease in
# the environment ($interface $ip $subnet $mask $router $staticroutes $mtu $dns ...).
dhcp_event() {
	case "$1" in
	deconfig)
		ip -4 addr flush dev "$interface"
		ip link set "$interface" up
		;;
	bound|renew)
		[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
		prefix=${mask:-$(prefix_of "${subnet:-255.255.255.0}")}
		if ! ip -4 addr show dev "$interface" | grep -q " $ip/$prefix "; then
			ip -4 addr flush dev "$interface"
			ip addr add "$ip/$prefix" broadcast + dev "$interface"
		fi
		if [ -n "$staticroutes" ]; then
			# RFC 3442: with classless routes the router option is ignored.
			set -- $staticroutes
			while [ $# -ge 2 ]; do
				if [ "$2" = 0.0.0.0 ]; then
					ip route replace "$1" dev "$interface"
				else
					ip route replace "$1" via "$2" dev "$interface"
				fi
				shift 2
			done
		elif [ -n "$router" ]; then
			set -- $router
			ip route replace default via "$1" dev "$interface"
		fi
		{
			[ -n "$domain" ] && echo "search $domain"
			for server in $dns; do echo "nameserver $server"; done
		} > /etc/resolv.conf
		[ -n "$hostname" ] && echo "$hostname" > /run/dhcp-hostname
		;;
	esac
	return 0
}

# Global addresses, comma separated (empty if none).
addresses() {
	ip -o addr show scope global 2>/dev/null | awk '{ printf "%s%s", sep, $4; sep = "," }'
}

# -- instance data ----------------------------------------------------------------

# Flatten JSON on stdin to "path<TAB>value" lines (objects by key, arrays by index:
# public_keys.mykey, keys.0.data). Escaped newlines and tabs become spaces.
json_flatten() {
	awk '
	function ws() { while (pos <= n && index(" \t\r\n", substr(s, pos, 1))) pos++ }
	function str(   out, c) {
		out = ""; pos++
		while (pos <= n) {
			c = substr(s, pos, 1); pos++
			if (c == "\"") return out
			if (c == "\\") {
				c = substr(s, pos, 1); pos++
				if (c == "n" || c == "r" || c == "t") c = " "
				else if (c == "b" || c == "f") c = ""
				else if (c == "u") { c = "?"; pos += 4 }
			}
			out = out c
		}
		return out
	}
	function value(path,   c, key, i, start) {
		ws(); c = substr(s, pos, 1)
		if (c == "{") {
			pos++; ws()
			if (substr(s, pos, 1) == "}") { pos++; return }
			while (pos <= n) {
				ws(); key = str(); ws(); pos++
				value(path == "" ? key : path "." key)
				ws(); c = substr(s, pos, 1); pos++
				if (c != ",") return
			}
			return
		}
		if (c == "[") {
			pos++; ws()
			if (substr(s, pos, 1) == "]") { pos++; return }
			for (i = 0; pos <= n; i++) {
				value(path "." i)
				ws(); c = substr(s, pos, 1); pos++
				if (c != ",") return
			}
			return
		}
		if (c == "\"") { print path "\t" str(); return }
		start = pos
		while (pos <= n && !index(",}] \t\r\n", substr(s, pos, 1))) pos++
		print path "\t" substr(s, start, pos - start)
	}
	{ s = s $0 "\n" }
	END { n = length(s); pos = 1; value("") }
	'
}

json_value() {  # json_value KEY FLATFILE: the value at KEY
	awk -F '\t' -v key="$1" '$1 == key { print $2; exit }' "$2"
}

# Turn an OpenStack meta_data.json in $RUN into $RUN/hostname, instance-id, authorized_keys.
use_openstack_metadata() {
	json_flatten < "$RUN/meta_data.json" > "$RUN/meta_data.flat"
	name=$(json_value hostname "$RUN/meta_data.flat")
	[ -n "$name" ] || name=$(json_value name "$RUN/meta_data.flat")
	[ -n "$name" ] && echo "$name" > "$RUN/hostname"
	json_value uuid "$RUN/meta_data.flat" > "$RUN/instance-id"
	awk -F '\t' '$1 ~ /^public_keys\./ { print $2 }' "$RUN/meta_data.flat" > "$RUN/authorized_keys"
	if [ ! -s "$RUN/authorized_keys" ]; then
		awk -F '\t' '$1 ~ /^keys\.[0-9]+\.data$/ { print $2 }' "$RUN/meta_data.flat" > "$RUN/authorized_keys"
	fi
}

find_config_drive() {
	for label in config-2 CONFIG-2; do
		dev=$(findfs "LABEL=$label" 2>/dev/null) && { echo "$dev"; return 0; }
	done
	return 1
}

read_config_drive() {
	dev=$(find_config_drive) || return 1
	mkdir -p /mnt/config
	mount -t iso9660 -o ro "$dev" /mnt/config 2>/dev/null \
		|| mount -o ro "$dev" /mnt/config 2>/dev/null \
		|| { say "cannot mount config drive $dev"; return 1; }
	ok=1
	if cp /mnt/config/openstack/latest/meta_data.json "$RUN/meta_data.json" 2>/dev/null; then
		use_openstack_metadata
		cp /mnt/config/openstack/latest/user_data "$RUN/user_data" 2>/dev/null
		ok=0
		say "instance data from config drive $dev"
	else
		say "config drive $dev has no openstack/latest/meta_data.json"
	fi
	umount /mnt/config
	return $ok
}

# fetch PATH FILE: GET the metadata service's PATH into FILE. Returns 1 when the
# service cannot be reached (worth a retry) and 2 when it answered with an error.
fetch() {
	rm -f "$2"
	timeout "$FETCH_TIMEOUT" wget -q -O "$2" "$MD/$1" 2> "$RUN/wget.err" && [ -s "$2" ] && return 0
	rm -f "$2"
	grep -q "server returned error" "$RUN/wget.err" && return 2
	return 1
}

read_openstack_metadata() {
	tries=0
	while :; do
		fetch openstack/latest/meta_data.json "$RUN/meta_data.json"
		case $? in
		0) break ;;
		2) return 1 ;;
		esac
		tries=$((tries + 1))
		[ $tries -lt 3 ] || return 1
		sleep 1
	done
	use_openstack_metadata
	fetch openstack/latest/user_data "$RUN/user_data"
	say "instance data from $MD (OpenStack)"
}

read_ec2_metadata() {
	fetch latest/meta-data/hostname "$RUN/hostname" || return 1
	fetch latest/meta-data/instance-id "$RUN/instance-id"
	: > "$RUN/authorized_keys"
	if fetch latest/meta-data/public-keys/ "$RUN/key-list"; then
		for entry in $(cut -d= -f1 "$RUN/key-list"); do
			fetch "latest/meta-data/public-keys/$entry/openssh-key" "$RUN/key" \
				&& cat "$RUN/key" >> "$RUN/authorized_keys"
		done
	fi
	if [ ! -s "$RUN/authorized_keys" ] && fetch latest/meta-data/public-keys/0/openssh-key "$RUN/key"; then
		cat "$RUN/key" > "$RUN/authorized_keys"
	fi
	fetch latest/user-data "$RUN/user_data"
	say "instance data from $MD (EC2)"
}

read_metadata_service() {
	[ -n "$(addresses)" ] || return 1
	read_openstack_metadata || read_ec2_metadata
}

set_hostname() {
	name=$(cat "$RUN/hostname" 2>/dev/null)
	[ -n "$name" ] || name=$(cat /run/dhcp-hostname 2>/dev/null)
	[ -n "$name" ] || name=$(cat /etc/hostname 2>/dev/null)
	name=$(echo "$name" | tr -cd 'A-Za-z0-9.-')
	short=${name%%.*}
	[ -n "$short" ] || { short=tiny; name=tiny; }
	hostname "$short"
	echo "$short" > /etc/hostname
	{
		echo "127.0.0.1 localhost"
		if [ "$name" = "$short" ]; then echo "127.0.1.1 $short"; else echo "127.0.1.1 $name $short"; fi
	} > /etc/hosts
}

install_ssh_keys() {
	[ -s "$RUN/authorized_keys" ] || return 0
	mkdir -p /root/.ssh
	chmod 0700 /root /root/.ssh
	sed -e 's/[[:space:]]*$//' -e '/^$/d' "$RUN/authorized_keys" > /root/.ssh/authorized_keys
	chmod 0600 /root/.ssh/authorized_keys
	say "$(grep -c . /root/.ssh/authorized_keys) SSH key(s) for root"
}

HOST_KEY=/etc/dropbear/dropbear_ed25519_host_key

make_host_key() {  # kept on a root disk; made at every boot when running from RAM
	mkdir -p /etc/dropbear
	[ -s "$HOST_KEY" ] || dropbearkey -t ed25519 -f "$HOST_KEY" > /dev/null 2>&1
}

start_sshd() {
	key=$HOST_KEY
	public=$(dropbearkey -y -f "$key" 2>/dev/null | grep '^ssh-' | cut -d' ' -f1,2)
	echo "tinystack-guest ssh-host-key: $public"
	# -R: make other host key types when a client asks; -s: keys only, no passwords.
	dropbear -R -s || say "dropbear did not start"
}

# Run a #! user-data script once per instance, its output on the console and in
# /var/log/user-data.log. Without an instance id it runs at every boot.
run_user_data() {
	f=$RUN/user_data
	[ -s "$f" ] || return 0
	if [ "$(head -c 2 "$f")" != "#!" ]; then
		say "user-data is not a script (no #!); not run"
		return 0
	fi
	iid=$(cat "$RUN/instance-id" 2>/dev/null)
	if [ -n "$iid" ] && [ "$(cat "$STATE/user-data-done" 2>/dev/null)" = "$iid" ]; then
		say "user-data already ran for instance $iid"
		return 0
	fi
	cp "$f" "$STATE/user-data"
	chmod 0700 "$STATE/user-data"
	echo "$iid" > "$STATE/user-data-done"
	say "running user-data"
	{ (cd /root && HOME=/root "$STATE/user-data"); echo $? > "$RUN/user-data-status"; } 2>&1 \
		| tee /var/log/user-data.log
	say "user-data exited $(cat "$RUN/user-data-status")"
}

write_inittab() {
	cat > /etc/inittab <<'EOF'
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/echo "tinystack-guest: shutting down"
::shutdown:/usr/bin/killall -q dropbear acpid udhcpc
::shutdown:/bin/sync
::shutdown:/bin/mount -o remount,ro /
EOF
}

boot() {
	if [ $$ -ne 1 ]; then
		echo "usage: /init runs as PID 1 at boot" >&2
		exit 2
	fi
	mount_kernel_filesystems
	if [ "$1" != switched ]; then
		load_modules load-order
		switch_to_root_disk
	fi
	# The IDE CD-ROM driver (a config drive may be a CD) probes for most of a second:
	# let it, and the SSH host key's wait for entropy, overlap with DHCP; on tinystack,
	# whose config drives are virtio disks, skip it.
	cdrom_loader=
	if ! config_drive_on_virtio_only; then
		load_modules load-order.cdrom &
		cdrom_loader=$!
	fi
	mount_runtime_filesystems
	hostname -F /etc/hostname 2>/dev/null || hostname tiny
	syslogd -C64
	make_host_key &
	host_key_maker=$!
	start_network
	[ -z "$cdrom_loader" ] || wait $cdrom_loader
	rm -rf /run/modules
	read_config_drive || read_metadata_service \
		|| say "no instance data (no config drive, no metadata service)"
	set_hostname
	install_ssh_keys
	wait $host_key_maker
	start_sshd
	acpid || say "acpid did not start"
	addrs=$(addresses)
	uptime=$(cut -d' ' -f1 /proc/uptime)
	echo "tinystack-guest ready: hostname=$(hostname) addresses=${addrs:-none} uptime=$uptime"
	run_user_data &
	write_inittab
	exec /sbin/init
}

case "${0##*/}" in
default.script) dhcp_event "$@" ;;
00000080) poweroff ;;
*) boot "$@" ;;
esac
