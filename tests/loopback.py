"""A small broker for the client tests, made of the server-side primitives, on 127.0.0.1.

Real HTTP, real MIME, real signatures: the only thing simplified is policy (an in-memory
queue, one mailbox). Hooks let a test break one response at a time.
"""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lxml import etree

from sdp import ebms, mime, server
from sdp.devpki import Identity
from sdp.message import receipt_sbd

Hook = Callable[[bytes], bytes]
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


@dataclass
class LoopbackBroker:
    broker: Identity
    mailbox: Identity
    trust: list
    intermediates: list
    mf_orgnr: str
    #: Receipts queued per consignment, in order (kinds of `sdp.message.receipt_sbd`).
    receipt_kinds: list[str] = field(default_factory=lambda: ["levering"])
    #: Transform the next transport receipt's bytes (one-shot).
    tamper_receipt: Hook | None = None
    #: Drop the connection after processing this many requests (outcome unknown to client).
    drop_after_processing: int = 0
    #: Answer every user message with this ebMS error code instead of a receipt.
    reject_with: str | None = None
    #: Answer every user message with an unsigned SOAP fault (HTTP 500).
    fault: bool = False
    #: Transform each queued receipt SBD before it is handed out.
    tamper_sbd: Hook | None = None
    received_message_ids: list[str] = field(default_factory=list)
    accepted: dict[str, bytes] = field(default_factory=dict)
    queues: dict[str, deque[bytes]] = field(default_factory=dict)
    inflight: dict[str, bytes] = field(default_factory=dict)
    confirmed: list[ebms.ReceiptSignal] = field(default_factory=list)
    incoming: list[server.IncomingUserMessage] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    url: str = ""

    def handle(self, content_type: str, body: bytes) -> tuple[int, bytes]:
        parsed = mime.parse_message(content_type, body)
        env = ebms.parse_envelope(parsed.envelope)
        kinds = {type(m) for m in ebms.messages(env)}
        if ebms.PulledUserMessage in kinds:
            return self._user_message(parsed)
        return self._pull(parsed)

    def _user_message(self, parsed: mime.ParsedMessage) -> tuple[int, bytes]:
        incoming = server.verify_user_message(parsed, trust=self.trust,
                                              intermediates=self.intermediates)
        self.received_message_ids.append(incoming.message_id)
        if self.fault:
            envelope = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"env": SOAP12})
            etree.SubElement(envelope, f"{{{SOAP12}}}Body").append(
                ebms.soap_fault("Receiver", "internal error in the test broker"))
            return 500, etree.tostring(envelope)
        if self.reject_with:
            return 500, server.error_response(self.reject_with, incoming.message_id,
                                              self.broker, description="rejected by test")
        if incoming.message_id in self.accepted:  # de-duplication on MessageId (DIGEST 9.5)
            return 200, self.accepted[incoming.message_id]
        response = server.transport_receipt_response(incoming, self.broker)
        self.accepted[incoming.message_id] = response
        self.incoming.append(incoming)
        queue = self.queues.setdefault(incoming.message.mpc or "urn:normal", deque())
        for kind in self.receipt_kinds:
            sbd = receipt_sbd(kind=kind, conversation_id=incoming.sbd.conversation_id,
                              sender_orgnr=incoming.sbd.receiver_orgnr,
                              receiver_orgnr=incoming.sbd.sender_orgnr, signer=self.mailbox,
                              beskrivelse="feil nummer" if kind == "varslingfeilet" else None,
                              detaljer="Kan ikke dekryptere" if kind == "feil" else None)
            queue.append(sbd.xml)
        if self.tamper_receipt is not None:
            hook, self.tamper_receipt = self.tamper_receipt, None
            return 200, hook(response)
        return 200, response

    def _pull(self, parsed: mime.ParsedMessage) -> tuple[int, bytes]:
        incoming = server.verify_pull(parsed, trust=self.trust, intermediates=self.intermediates)
        for receipt in incoming.receipts:
            if receipt.ref_to_message_id in self.inflight:
                del self.inflight[receipt.ref_to_message_id]
                self.confirmed.append(receipt)
        if incoming.pull is None:
            return 200, b""
        pull = incoming.pull
        queue = self.queues.get(pull.mpc or "urn:normal")
        if not queue:
            return 200, server.empty_queue_response(pull.message_id, self.broker)
        sbd_xml = queue.popleft()
        if self.tamper_sbd is not None:
            sbd_xml = self.tamper_sbd(sbd_xml)
        message_id = ebms.new_message_id()
        self.inflight[message_id] = sbd_xml
        return 200, server.pulled_message_response(
            sbd_xml, pull_message_id=pull.message_id, mpc=pull.mpc or "urn:normal",
            broker=self.broker, broker_orgnr=self.mf_orgnr, sender_orgnr=incoming.sender_orgnr,
            message_id=message_id)


@contextmanager
def serve(state: LoopbackBroker) -> Iterator[LoopbackBroker]:
    processed = 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            nonlocal processed
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            try:
                status, payload = state.handle(self.headers.get("Content-Type", ""), body)
            except Exception as exc:  # a test broker reports, it does not hang up
                state.errors.append(exc)
                status, payload = 400, f"{type(exc).__name__}: {exc}".encode()
            processed += 1
            if processed <= state.drop_after_processing:
                self.close_connection = True
                self.connection.shutdown(2)  # processed, but the client never hears back
                return
            self.send_response(status)
            self.send_header("Content-Type", mime.SOAP_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/api/ebms"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
