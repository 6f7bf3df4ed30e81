"""A scripted SMTP server for fault injection, on raw asyncio streams in a background thread.

Each recipient can be given a list of behaviours, one consumed per attempt ("ok" once the list
is empty):

    ok                      accept
    rcpt:550 5.1.1 text     reply to RCPT with this
    mail:550 5.7.1 text     reply to MAIL FROM with this
    data:451 4.3.0 text     reply to the final dot with this (message not stored)
    datacmd:554 text        reply to the DATA command itself
    drop-after-data         store the message, then close without replying (RFC 5321 §6.1)
    drop-during-data        close after reading part of the message (nothing stored)
    stall-final:SECONDS     wait before the 250 for the final dot
    stall-rcpt:SECONDS      wait before replying to RCPT
    garbage-mail            answer MAIL FROM with a line that is not an SMTP reply

Server-wide: `greeting` replaces the 220 banner (e.g. "421 4.3.2 busy" then close), `auth` makes
the server advertise AUTH and answer every attempt with that reply (e.g. "535 5.7.8 bad").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Stored:
    mail_from: str
    rcpt: str
    data: bytes
    connection: int


@dataclass
class FaultServer:
    host: str = "127.0.0.1"
    port: int = 0
    greeting: str | None = None
    auth: str | None = None
    plans: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    default: str = "ok"
    stored: list[Stored] = field(default_factory=list)
    connections: int = 0
    transactions: int = 0  # MAIL FROM commands seen
    on_store: list[object] = field(default_factory=list)  # callables run after a message is stored

    def plan(self, rcpt: str, *behaviours: str) -> None:
        self.plans[rcpt.lower()].extend(behaviours)

    def received_by(self, rcpt: str) -> list[Stored]:
        return [s for s in self.stored if s.rcpt == rcpt.lower()]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FaultServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._session, self.host, self.port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- one SMTP session ---------------------------------------------------------------------

    def _next(self, rcpt: str) -> str:
        queue = self.plans.get(rcpt)
        return queue.pop(0) if queue else self.default

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections

        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        try:
            if self.greeting:
                say(self.greeting)
                await writer.drain()
                return
            say("220 fault.test ESMTP scripted")
            mail_from, rcpt, behaviour = "", "", "ok"
            greeted = False
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    greeted = True
                    extra = ["250-AUTH PLAIN LOGIN"] if self.auth else []
                    for ext in ("250-fault.test", *extra, "250-PIPELINING", "250-8BITMIME"):
                        say(ext)
                    say("250 SIZE 52428800")
                elif verb == "AUTH":
                    say(self.auth or "503 no auth here")
                elif verb == "MAIL" and not greeted:
                    say("503 5.5.1 send HELO/EHLO first")
                elif verb == "MAIL":
                    self.transactions += 1
                    mail_from = line.split(":", 1)[1].strip().strip("<>").split(">")[0]
                    rcpt, behaviour = "", "ok"
                    say("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpt = line.split(":", 1)[1].strip().strip("<>").split(">")[0].lower()
                    behaviour = self._next(rcpt)
                    kind, _, arg = behaviour.partition(":")
                    if kind == "mail":
                        # Judged at RCPT time because MAIL comes before we know the recipient.
                        say(arg)
                    elif kind == "rcpt":
                        say(arg)
                    elif kind == "garbage-mail":
                        say("what is this")
                    elif kind == "stall-rcpt":
                        await asyncio.sleep(float(arg))
                        say("250 2.1.5 ok")
                    else:
                        say("250 2.1.5 ok")
                elif verb == "DATA":
                    kind, _, arg = behaviour.partition(":")
                    if kind == "datacmd":
                        say(arg)
                        continue
                    say("354 go ahead")
                    await writer.drain()
                    if kind == "drop-during-data":
                        await reader.read(256)
                        return
                    chunks: list[bytes] = []
                    while True:
                        chunk = await reader.readline()
                        if not chunk or chunk == b".\r\n":
                            break
                        chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    data = b"".join(chunks)
                    if kind == "data":
                        say(arg)
                        continue
                    self.stored.append(Stored(mail_from, rcpt, data, conn))
                    for hook in self.on_store:
                        hook()  # type: ignore[operator]
                    if kind == "drop-after-data":
                        return
                    if kind == "stall-final":
                        await writer.drain()
                        await asyncio.sleep(float(arg))
                    say("250 2.0.0 queued")
                elif verb in ("RSET", "NOOP"):
                    say("250 2.0.0 ok")
                elif verb == "QUIT":
                    say("221 2.0.0 bye")
                    await writer.drain()
                    return
                else:
                    say("500 5.5.2 what")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):  # the peer may be gone already
                writer.close()
