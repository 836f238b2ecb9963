"""A small OTLP/HTTP (protobuf) trace receiver on loopback, for tests that export spans by configuration."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # SERVER, CONSUMER, INTERNAL…
    attributes: dict[str, str]
    links: tuple[str, ...] = ()  # the linked spans' ids, hex


class Receiver(ThreadingHTTPServer):
    """POST /v1/traces on 127.0.0.1 (a free port): keeps every span received, in `spans`."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest.FromString(body)
                got = []
                for rs in req.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            got.append(ReceivedSpan(
                                service=resource.get("service.name", ""), trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
                                name=span.name, kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                                attributes={a.key: a.value.string_value or str(a.value.int_value)
                                            for a in span.attributes},
                                links=tuple(link.span_id.hex() for link in span.links)))
                with receiver.lock:
                    receiver.spans.extend(got)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Receiver:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def received(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)
