"""Python's smtplib as a client of Postern's server session.

Usage: smtplib_client.py PORT USER PASSWORD
Prints one JSON object: the server's EHLO keywords, whether STARTTLS and
AUTH worked, and the recipients sendmail() reported as refused.
"""
import json
import smtplib
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
body = "Subject: interop\r\n\r\n.line starting with a dot\r\nend\r\n"
with smtplib.SMTP("127.0.0.1", port, local_hostname="smtplib.test", timeout=10) as s:
    s.ehlo()
    keywords = sorted(s.esmtp_features)
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo()
    s.login(user, password)
    refused = s.sendmail(
        "python@example.org",
        ["ok@example.com", "gone@example.com"],
        body,
    )
print(json.dumps({
    "keywords": keywords,
    "refused": {k: [v[0], v[1].decode()] for k, v in refused.items()},
}))
