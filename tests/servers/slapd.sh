#!/usr/bin/env bash
# A throw-away OpenLDAP server for tests.
#
#   tests/servers/slapd.sh start DIR   # generate certs, config and data in DIR, start slapd
#   tests/servers/slapd.sh stop DIR    # kill it (SIGKILL: the data is throw-away, and a clean
#                                      # shutdown takes slapd a second); DIR is left for inspection
#
# `start` writes DIR/env, one KEY=VALUE per line:
#   LDAP_URL            ldap://127.0.0.1:PORT   (plain; StartTLS is offered)
#   LDAPS_URL           ldaps://127.0.0.1:PORT
#   LDAP_CA_FILE        PEM of the CA that signed the server certificate (SAN IP:127.0.0.1, DNS:localhost)
#   LDAP_OTHER_CA_FILE  PEM of an unrelated CA (for "wrong CA" tests)
#   LDAP_BASE_DN        dc=quiver,dc=test
#   LDAP_ADMIN_DN / LDAP_ADMIN_PASSWORD   rootdn cn=admin,dc=quiver,dc=test / admin-secret
#   LDAP_BIND_DN / LDAP_BIND_PASSWORD     service account cn=svc,ou=services,dc=quiver,dc=test / svc-secret
#   LDAP_PID            slapd's process id
#   LDAP_<USER>_PASSWORD for the test users below
#
# Test tree (users are inetOrgPerson under ou=people, groups are groupOfNames under ou=groups):
#   uid=alice        password alice-secret   member of analysts, privacy
#   uid=bob          password bob-secret     member of engineers
#   uid=carol        password carol-secret   no group
#   uid=o'brien, jr+x password obrien-secret member of analysts  (DN: uid=o'brien\, jr\+x,ou=people,...)
#   uid=star*(user)  password star-secret    member of engineers  (filter special characters)
#   The env keys are LDAP_ALICE_PASSWORD, LDAP_BOB_PASSWORD, LDAP_CAROL_PASSWORD,
#   LDAP_OBRIEN_PASSWORD (user LDAP_OBRIEN_USER) and LDAP_STAR_PASSWORD (user LDAP_STAR_USER).
#   Users also carry memberOf values (the memberof overlay is loaded), so the memberOf path can
#   be tested too.
#
# Works as root or as any user (slapd runs as the caller, files stay in DIR); needs the Debian
# packages slapd, ldap-utils, openssl and python3. Starts in about a second.
set -euo pipefail

die() { echo "slapd.sh: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop DIR"

SLAPD=${SLAPD:-/usr/sbin/slapd}
SLAPADD=${SLAPADD:-/usr/sbin/slapadd}
BASE=dc=quiver,dc=test

stop() {
    local pidfile=$dir/slapd.pid pid=""
    [ -f "$dir/env" ] && pid=$(sed -n 's/^LDAP_PID=//p' "$dir/env")
    [ -z "$pid" ] && [ -f "$pidfile" ] && pid=$(cat "$pidfile")
    [ -n "$pid" ] || return 0
    kill -9 "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        # Gone, or a zombie waiting for its (adoptive) parent to reap it.
        kill -0 "$pid" 2>/dev/null || return 0
        grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 0
        sleep 0.02
    done
    die "slapd (pid $pid) did not exit"
}

start() {
    [ -x "$SLAPD" ] || die "$SLAPD not found: install the Debian packages slapd and ldap-utils (scripts/test does)"
    [ -x "$SLAPADD" ] || die "$SLAPADD not found: install the Debian package slapd"
    command -v ldapsearch >/dev/null || die "ldapsearch not found: install the Debian package ldap-utils"
    command -v openssl >/dev/null || die "openssl not found"
    command -v python3 >/dev/null || die "python3 not found"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    rm -rf "$dir/data" && mkdir -p "$dir/data"

    # --- certificates: a CA, a server certificate for 127.0.0.1/localhost, an unrelated CA ---
    (
        cd "$dir"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -keyout ca.key -out ca.pem -subj "/CN=Quiver Test LDAP CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -keyout other-ca.key -out other-ca.pem -subj "/CN=Some Other CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem 2>/dev/null
        chmod 600 ca.key other-ca.key server.key
    ) || die "openssl failed to generate the test certificates"

    # --- passwords ---
    hash() { /usr/sbin/slappasswd -s "$1"; }
    local admin_pw=admin-secret svc_pw=svc-secret
    local obrien_user="o'brien, jr+x" star_user="star*(user)"

    # --- slapd.conf ---
    cat > "$dir/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile $dir/slapd.pid
argsfile $dir/slapd.args
loglevel none
TLSCACertificateFile $dir/ca.pem
TLSCertificateFile $dir/server.pem
TLSCertificateKeyFile $dir/server.key

database mdb
maxsize 16777216
suffix "$BASE"
rootdn "cn=admin,$BASE"
rootpw $(hash "$admin_pw")
directory $dir/data
overlay memberof
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by dn.exact="cn=svc,ou=services,$BASE" read
    by users read
    by * none
EOF

    # --- data ---
    cat > "$dir/data.ldif" <<EOF
dn: $BASE
objectClass: dcObject
objectClass: organization
dc: quiver
o: Quiver test

dn: ou=people,$BASE
objectClass: organizationalUnit
ou: people

dn: ou=groups,$BASE
objectClass: organizationalUnit
ou: groups

dn: ou=services,$BASE
objectClass: organizationalUnit
ou: services

dn: cn=svc,ou=services,$BASE
objectClass: person
cn: svc
sn: service
userPassword: $(hash "$svc_pw")

EOF
    # user entries: uid, DN-escaped uid, password, groups
    person() {
        local uid=$1 rdn=$2 pw=$3; shift 3
        {
            echo "dn: uid=$rdn,ou=people,$BASE"
            echo "objectClass: inetOrgPerson"
            echo "uid: $uid"
            echo "cn: $uid"
            echo "sn: $uid"
            echo "userPassword: $(hash "$pw")"
            for g in "$@"; do echo "memberOf: cn=$g,ou=groups,$BASE"; done
            echo
        } >> "$dir/data.ldif"
    }
    person alice alice alice-secret analysts privacy
    person bob bob bob-secret engineers
    person carol carol carol-secret
    person "$obrien_user" "o'brien\\, jr\\+x" obrien-secret analysts
    person "$star_user" "star*(user)" star-secret engineers
    group() {
        local name=$1; shift
        {
            echo "dn: cn=$name,ou=groups,$BASE"
            echo "objectClass: groupOfNames"
            echo "cn: $name"
            for m in "$@"; do echo "member: uid=$m,ou=people,$BASE"; done
            echo
        } >> "$dir/data.ldif"
    }
    group analysts alice "o'brien\\, jr\\+x"
    group engineers bob "star*(user)"
    group privacy alice

    "$SLAPADD" -q -f "$dir/slapd.conf" -l "$dir/data.ldif" >"$dir/slapadd.log" 2>&1 \
        || die "slapadd failed: $(cat "$dir/slapadd.log")"

    # --- ports and start ---
    local ports p1 p2
    ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
    read -r p1 p2 <<<"$ports"
    rm -f "$dir/slapd.pid"
    "$SLAPD" -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$p1/ ldaps://127.0.0.1:$p2/" >"$dir/slapd.log" 2>&1 \
        || die "slapd failed to start: $(cat "$dir/slapd.log")"
    local ok=""
    for _ in $(seq 1 200); do
        if [ -s "$dir/slapd.pid" ] && ldapsearch -x -LLL -H "ldap://127.0.0.1:$p1/" -D "cn=svc,ou=services,$BASE" \
            -w "$svc_pw" -b "$BASE" -s base dn >/dev/null 2>&1; then
            ok=1; break
        fi
        sleep 0.05
    done
    [ -n "$ok" ] || { stop; die "slapd did not answer on 127.0.0.1:$p1 within 10 s: $(cat "$dir/slapd.log")"; }

    cat > "$dir/env" <<EOF
LDAP_URL=ldap://127.0.0.1:$p1
LDAPS_URL=ldaps://127.0.0.1:$p2
LDAP_CA_FILE=$dir/ca.pem
LDAP_OTHER_CA_FILE=$dir/other-ca.pem
LDAP_BASE_DN=$BASE
LDAP_ADMIN_DN=cn=admin,$BASE
LDAP_ADMIN_PASSWORD=$admin_pw
LDAP_BIND_DN=cn=svc,ou=services,$BASE
LDAP_BIND_PASSWORD=$svc_pw
LDAP_PID=$(cat "$dir/slapd.pid")
LDAP_ALICE_PASSWORD=alice-secret
LDAP_BOB_PASSWORD=bob-secret
LDAP_CAROL_PASSWORD=carol-secret
LDAP_OBRIEN_USER=$obrien_user
LDAP_OBRIEN_PASSWORD=obrien-secret
LDAP_STAR_USER=$star_user
LDAP_STAR_PASSWORD=star-secret
EOF
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
