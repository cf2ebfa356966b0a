"""One SMTP transaction with Python's stdlib smtplib, for test/interop/smtplib.test.ts.

Connects from --source (bind address), optionally upgrades with STARTTLS or uses implicit TLS, optionally
authenticates, sends one message with the given Message-ID and prints one JSON object describing the outcome:

  {"outcome": "sent" | "auth_failed" | "sender_refused" | "recipients_refused" | "data_refused",
   "code": int | null, "message": str | null, "refused": {rcpt: [code, message]}, "tls": bool,
   "features": [ehlo keywords], "auth": "PLAIN" | "LOGIN" | null}

Any other exception is a crash: traceback on stderr, exit code 1. The server's certificate is self-signed, so
it is not verified.
"""
import argparse
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage


# Given explicitly: without it smtplib calls socket.getfqdn(), a DNS lookup that can stall offline.
HELO = 'smtplib.interop.test'


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def text(b) -> str:
    return b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--source', default=None, help='local address to bind')
    p.add_argument('--mode', choices=['plain', 'starttls', 'ssl'], default='plain')
    p.add_argument('--user')
    p.add_argument('--password')
    p.add_argument('--mech', choices=['PLAIN', 'LOGIN'], default='PLAIN')
    p.add_argument('--sender', required=True)
    p.add_argument('--rcpt', action='append', required=True)
    p.add_argument('--message-id', required=True)
    p.add_argument('--timeout', type=float, default=10.0)
    a = p.parse_args()

    source = (a.source, 0) if a.source else None
    if a.mode == 'ssl':
        s = smtplib.SMTP_SSL(a.host, a.port, source_address=source, timeout=a.timeout, context=tls_context(),
                             local_hostname=HELO)
    else:
        s = smtplib.SMTP(a.host, a.port, source_address=source, timeout=a.timeout, local_hostname=HELO)
    out = {'outcome': None, 'code': None, 'message': None, 'refused': {}, 'tls': a.mode == 'ssl', 'features': [], 'auth': None}
    try:
        s.ehlo()
        if a.mode == 'starttls':
            code, msg = s.starttls(context=tls_context())
            out['tls'] = code == 220
            s.ehlo()
        out['features'] = sorted(s.esmtp_features.keys())
        if a.user is not None:
            s.user, s.password = a.user, a.password
            try:
                if a.mech == 'PLAIN':
                    code, msg = s.auth('PLAIN', s.auth_plain)
                else:
                    code, msg = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
                out['auth'] = a.mech
            except smtplib.SMTPAuthenticationError as e:
                out.update(outcome='auth_failed', code=e.smtp_code, message=text(e.smtp_error))
                return finish(s, out)

        m = EmailMessage()
        m['From'] = a.sender
        m['To'] = ', '.join(a.rcpt)
        m['Subject'] = 'relayguard interop: smtplib'
        m['Message-ID'] = '<%s>' % a.message_id
        m.set_content('Sent by Python smtplib.\n')
        try:
            refused = s.send_message(m, from_addr=a.sender, to_addrs=a.rcpt)
            out.update(outcome='sent', refused={k: [v[0], text(v[1])] for k, v in refused.items()})
        except smtplib.SMTPSenderRefused as e:
            out.update(outcome='sender_refused', code=e.smtp_code, message=text(e.smtp_error))
        except smtplib.SMTPRecipientsRefused as e:
            refused = {k: [v[0], text(v[1])] for k, v in e.recipients.items()}
            first = next(iter(refused.values()))
            out.update(outcome='recipients_refused', code=first[0], message=first[1], refused=refused)
        except smtplib.SMTPDataError as e:
            out.update(outcome='data_refused', code=e.smtp_code, message=text(e.smtp_error))
        return finish(s, out)
    except BaseException:
        s.close()
        raise


def finish(s: smtplib.SMTP, out: dict) -> int:
    try:
        s.quit()
    except smtplib.SMTPServerDisconnected:
        pass
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
