#!/usr/bin/env python3
"""Print a base64 SPNEGO token for a Kerberos service, from the ticket cache in KRB5CCNAME.

    negotiate_token.py [SERVICE] [--krb5] [--url URL]

SERVICE is a host-based name, `HTTP@localhost` by default. The token goes in
`authorization: Negotiate <token>` (HTTP or Flight). `--krb5` produces a raw Kerberos 5 token
instead of SPNEGO. With `--url`, the script sends `GET URL` with the header itself, prints the
HTTP status, and checks the server's mutual-authentication reply (`www-authenticate: Negotiate
<reply>`): exit status 0 only when the reply completes the context.

Needs the `gssapi` package (pip install gssapi; builds against libkrb5-dev) and the
environment of tests/servers/kdc.sh: KRB5_CONFIG from DIR/env and KRB5CCNAME from `kdc.sh kinit`.
"""
import argparse
import base64
import sys
import urllib.error
import urllib.request

import gssapi

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
KRB5 = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", nargs="?", default="HTTP@localhost")
    parser.add_argument("--krb5", action="store_true", help="raw Kerberos 5 token, not SPNEGO")
    parser.add_argument("--url", help="send GET URL with the token and verify the reply")
    args = parser.parse_args()

    name = gssapi.Name(args.service, gssapi.NameType.hostbased_service)
    flags = gssapi.RequirementFlag.mutual_authentication | gssapi.RequirementFlag.out_of_sequence_detection
    ctx = gssapi.SecurityContext(name=name, usage="initiate", mech=KRB5 if args.krb5 else SPNEGO, flags=flags)
    token = base64.b64encode(ctx.step()).decode()
    if not args.url:
        print(token)
        return 0

    request = urllib.request.Request(args.url, headers={"authorization": f"Negotiate {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as e:
        status, headers = e.code, e.headers
    print(f"status {status}")
    reply = headers.get("www-authenticate", "")
    if not reply.lower().startswith("negotiate "):
        print("no Negotiate reply token", file=sys.stderr)
        return 1
    ctx.step(base64.b64decode(reply.split(None, 1)[1]))
    print("mutual authentication complete" if ctx.complete else "context not complete")
    return 0 if ctx.complete and status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
