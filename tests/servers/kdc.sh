#!/usr/bin/env bash
# A throw-away MIT Kerberos KDC for tests: realm QUIVER.TEST on 127.0.0.1, everything in one
# directory (no /etc changes, works as root and as an ordinary user).
#
#   kdc.sh start DIR               create the realm in DIR, start krb5kdc, write DIR/env
#   kdc.sh kinit DIR USER CCACHE   get USER's TGT into the ccache file CCACHE (password on stdin)
#   kdc.sh stop DIR                stop the KDC started in DIR
#
# Principals (realm QUIVER.TEST):
#   HTTP/localhost   random key, exported to DIR/service.keytab (the gateway's service key)
#   HTTP/otherhost   random key, NOT in the keytab (tickets for it must be refused)
#   alice            password alice-pw
#   bob              password bob-pw
#
# DIR/env holds KEY=VALUE lines: KRB5_CONFIG, KRB5_KDC_PROFILE, KDC_PORT, KRB5_REALM,
# KRB5_KEYTAB, KRB5_SERVICE_PRINCIPAL, KDC_PID, KRB5RCACHEDIR, ALICE_PASSWORD, BOB_PASSWORD.
# Needs: krb5-kdc krb5-admin-server krb5-user python3.
set -euo pipefail

REALM=QUIVER.TEST
MASTER_PW=quiver-master-pw
ALICE_PW=alice-pw
BOB_PW=bob-pw
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "kdc.sh: $*" >&2; exit 1; }

use_dir() {
    [ -n "${1:-}" ] || die "missing DIR"
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    export KRB5_CONFIG="$DIR/krb5.conf" KRB5_KDC_PROFILE="$DIR/kdc.conf" KRB5RCACHEDIR="$DIR/rcache"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_config() {
    local port=$1
    mkdir -p "$DIR/rcache"
    cat >"$DIR/krb5.conf" <<CONF
[libdefaults]
    default_realm = $REALM
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    default_ccache_name = FILE:$DIR/ccache
    default_keytab_name = FILE:$DIR/service.keytab

[realms]
    $REALM = {
        kdc = 127.0.0.1:$port
    }

[domain_realm]
    localhost = $REALM
    otherhost = $REALM

[logging]
    default = FILE:$DIR/krb5lib.log
CONF
    cat >"$DIR/kdc.conf" <<CONF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$port
    kdc_tcp_listen = 127.0.0.1:$port

[realms]
    $REALM = {
        database_name = $DIR/principal
        key_stash_file = $DIR/stash
        acl_file = $DIR/kadm5.acl
        kdc_listen = 127.0.0.1:$port
        kdc_tcp_listen = 127.0.0.1:$port
        max_life = 10h
        max_renewable_life = 1d
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }

[logging]
    kdc = FILE:$DIR/kdc.log
CONF
    : >"$DIR/kadm5.acl"
}

create_realm() {
    rm -f "$DIR"/principal* "$DIR/stash" "$DIR/service.keytab"
    kdb5_util create -s -r "$REALM" -P "$MASTER_PW" >"$DIR/kdb5_util.log" 2>&1 \
        || die "kdb5_util create failed: $(cat "$DIR/kdb5_util.log")"
    kadmin.local -r "$REALM" >"$DIR/kadmin.log" 2>&1 <<CMDS || die "kadmin.local failed: $(cat "$DIR/kadmin.log")"
addprinc -randkey HTTP/localhost@$REALM
addprinc -randkey HTTP/otherhost@$REALM
addprinc -pw $ALICE_PW alice@$REALM
addprinc -pw $BOB_PW bob@$REALM
ktadd -k $DIR/service.keytab HTTP/localhost@$REALM
CMDS
    [ -s "$DIR/service.keytab" ] || die "keytab not written: $(cat "$DIR/kadmin.log")"
}

do_kinit() {
    local user=$1 ccache=$2 pw
    case "$user" in
        alice) pw=$ALICE_PW ;;
        bob) pw=$BOB_PW ;;
        *) die "unknown user $user (alice or bob)" ;;
    esac
    echo "$pw" | kinit -c "FILE:$ccache" "$user@$REALM" >/dev/null
}

start() {
    use_dir "$1"
    [ -f "$DIR/kdc.pid" ] && kill -0 "$(cat "$DIR/kdc.pid")" 2>/dev/null && die "a KDC is already running for $DIR"
    local attempt port pid
    for attempt in 1 2 3; do
        port=$(free_port)
        write_config "$port"
        [ "$attempt" = 1 ] && create_realm
        krb5kdc -n -r "$REALM" </dev/null >>"$DIR/kdc.out" 2>&1 &
        pid=$!
        echo "$pid" >"$DIR/kdc.pid"
        # Ready when a kinit succeeds (about 0.1 s); give up after 10 s.
        local i
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            if do_kinit alice "$DIR/probe.ccache" 2>/dev/null; then
                rm -f "$DIR/probe.ccache"
                cat >"$DIR/env" <<ENV
KRB5_CONFIG=$DIR/krb5.conf
KRB5_KDC_PROFILE=$DIR/kdc.conf
KDC_PORT=$port
KRB5_REALM=$REALM
KRB5_KEYTAB=$DIR/service.keytab
KRB5_SERVICE_PRINCIPAL=HTTP/localhost@$REALM
KDC_PID=$pid
KRB5RCACHEDIR=$DIR/rcache
ALICE_PASSWORD=$ALICE_PW
BOB_PASSWORD=$BOB_PW
ENV
                cat "$DIR/env"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        # Port taken between picking and binding: try another one.
    done
    die "krb5kdc did not start: $(tail -n 20 "$DIR/kdc.out" "$DIR/kdc.log" 2>/dev/null)"
}

stop() {
    use_dir "$1"
    [ -f "$DIR/kdc.pid" ] || return 0
    local pid
    pid=$(cat "$DIR/kdc.pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/kdc.pid"
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    kinit)
        [ $# -eq 4 ] || die "usage: kdc.sh kinit DIR USER CCACHE"
        use_dir "$2"
        do_kinit "$3" "$4"
        ;;
    *) die "usage: kdc.sh start DIR | kinit DIR USER CCACHE | stop DIR" ;;
esac
