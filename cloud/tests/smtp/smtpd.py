"""A real SMTP server on loopback for outpost-cloud's new-location tests.

aiosmtpd with STARTTLS required (the certificate and key files given as
arguments). Prints `port=N` when ready, then one JSON line per message
received: envelope sender and recipients, whether TLS was on, and the
decoded text body. Runs until its standard input closes.
"""

import email
import json
import socket
import ssl
import sys

from aiosmtpd.controller import Controller


class Capture:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        body = msg.get_payload(decode=True).decode("utf-8", "replace")
        print(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "tls": session.ssl is not None,
                    "subject": msg["Subject"],
                    "body": body,
                }
            ),
            flush=True,
        )
        return "250 Message accepted"


def main():
    cert, key = sys.argv[1], sys.argv[2]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(
        Capture(),
        hostname="127.0.0.1",
        port=port,
        tls_context=ctx,
        require_starttls=True,
    )
    controller.start()
    print(f"port={port}", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
