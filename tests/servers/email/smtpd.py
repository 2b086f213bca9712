"""SMTP server for tests/email.rs (aiosmtpd, in the venv scripts/setup.sh makes).

Delivers each accepted mail into <root>/mail/<local part>/Maildir (the
Maildir Dovecot serves), for the users in <root>/users and the group
addresses in <root>/aliases (each member gets a copy); AUTH PLAIN/LOGIN is
offered and checked against the same file. Every connection, AUTH, refused
recipient and delivery is logged as a JSON line in
<root>/mail/smtp-events.log, with `conn`, the connection's number (so a test
can count the SMTP sessions its mails came in). A number
in <root>/mail/smtp-tempfail makes that many DATA commands of authenticated
clients answer 451 4.7.1.
(<root>/mail belongs to the user this runs as, `mail`.)

usage: python smtpd.py PORT ROOT
"""
import asyncio, json, mailbox, os, sys, time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

PORT, ROOT = int(sys.argv[1]), sys.argv[2]


def users():
    out = {}
    with open(os.path.join(ROOT, "users")) as f:
        for line in f:
            if ":" in line:
                name, pw = line.strip().split(":", 1)
                out[name] = pw.replace("{PLAIN}", "", 1)
    return out


def event(**kw):
    kw["t"] = time.time()
    with open(os.path.join(ROOT, "mail", "smtp-events.log"), "a") as f:
        f.write(json.dumps(kw) + "\n")


def aliases():
    """<root>/aliases: `team: kata, ann, bob` lines (a group address)."""
    out = {}
    path = os.path.join(ROOT, "aliases")
    if os.path.exists(path):
        for line in open(path):
            if ":" in line:
                name, members = line.split(":", 1)
                out[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    return out


def conn(session):
    return getattr(session, "conn", None)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and users().get(auth_data.login.decode()) == auth_data.password.decode()
    event(event="auth", mechanism=mechanism, user=auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None, ok=ok,
          conn=conn(session))
    return AuthResult(success=ok)


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local not in users() and local not in aliases():
            event(event="rcpt-refused", mail_from=envelope.mail_from, rcpt=address, conn=conn(session))
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        tempfail = os.path.join(ROOT, "mail", "smtp-tempfail")
        # Only for authenticated clients (kata), not the test's own submissions.
        if session.authenticated and os.path.exists(tempfail):
            n = int(open(tempfail).read().strip() or 0)
            if n > 0:
                open(tempfail, "w").write(str(n - 1))
                event(event="tempfail", mail_from=envelope.mail_from, conn=conn(session))
                return "451 4.7.1 Too many messages, slow down"
        locals_ = []
        for rcpt in envelope.rcpt_tos:
            local = rcpt.split("@")[0].lower()
            for user in aliases().get(local, [local]):
                if user not in locals_:
                    locals_.append(user)
        for user in locals_:
            box = mailbox.Maildir(os.path.join(ROOT, "mail", user, "Maildir"), create=True)
            box.add(envelope.original_content)
        event(event="data", mail_from=envelope.mail_from, rcpt=envelope.rcpt_tos, size=len(envelope.original_content), conn=conn(session))
        return "250 2.0.0 OK queued"


class Server(SMTP):
    connections = 0

    def connection_made(self, transport):
        # Called again after STARTTLS, on the same connection.
        if not hasattr(self, "kata_conn"):
            Server.connections += 1
            self.kata_conn = Server.connections
            event(event="connect", conn=self.kata_conn)
        super().connection_made(transport)
        self.session.conn = self.kata_conn


async def main():
    loop = asyncio.get_running_loop()
    handler = Handler()
    server = await loop.create_server(
        lambda: Server(handler, hostname="mx.test", authenticator=authenticator, auth_require_tls=False),
        "127.0.0.1",
        PORT,
    )
    print("smtpd listening on", PORT, flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
