"""aiosmtpd as the server Postern's client session delivers to.

Usage: aiosmtpd_server.py OUTFILE
Prints the port it listens on, then serves until killed. Each message is
appended to OUTFILE as one JSON line. RCPT to reject@... gets 550 5.1.1.
"""
import json
import socket
import sys
import time

from aiosmtpd.controller import Controller

out = sys.argv[1]


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({
                "helo": session.host_name,
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "content": envelope.original_content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 2.0.0 OK"


probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print(port, flush=True)
while True:
    time.sleep(60)
