"""daphne refuses a request body over DATA_UPLOAD_MAX_MEMORY_SIZE as it arrives (issue 20).

daphne (Twisted's ``http.Request``) reads a request's whole body, to memory or a temporary
file, before it calls the application, and then queues all of it for the application at
once: a 100 MiB POST grew the process by about 100 MiB before tickerproject/bodylimit.py
could answer. BodyLimitRequest gives the same 413 (bodylimit.refusal) from Twisted's two hooks
for a body, before any of it is stored:

- ``gotLength``, called with the ``Content-Length`` when the headers are in: a declared
  length over the limit is answered at once;
- ``handleContentChunk``, called with each piece of the body as it is decoded: a body
  without a length (``Transfer-Encoding: chunked``) is answered when it passes the limit.

The answer goes straight to the connection, which is then closed: Twisted stops reading
it, the rest of the body is never read, and the request never reaches the application.
``install()`` (tickerproject/serve.py, run_daphne) has daphne's server build it.
"""

from daphne import http_protocol
from daphne import server as daphne_server
from twisted.web import http
from twisted.web.http_headers import Headers

from tickerproject.bodylimit import body_limit, refusal


class BodyLimitRequest(http_protocol.WebRequest):
    """daphne's request, refusing an over-size body before it is read."""

    refused = False
    received = 0
    limit: int | None = None

    def gotLength(self, length):
        """Called by the channel with the declared body length (None if chunked), before
        the body."""
        self.limit = body_limit()
        if self.limit is not None and length is not None and length > self.limit:
            self.refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        """Called by the channel with each decoded piece of the body."""
        if self.refused:
            return  # the rest of what one read from the socket held
        self.received += len(data)
        if self.limit is not None and self.received > self.limit:
            self.refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        """Called by the channel when the whole body is in; a refused request ends here (a
        chunked body's last chunk can come in the same read as the one that passed)."""
        if not self.refused:
            super().requestReceived(command, path, version)

    def refuse(self) -> None:
        """Answer 413 on the connection and close it, reading nothing more."""
        self.refused = True
        if self.content is not None:
            self.content.close()  # what a chunked body stored so far (at most the limit)
        # Twisted would answer "100 Continue" right after gotLength: the 413 is the answer.
        self.requestHeaders.removeHeader(b"Expect")
        raw_headers, body = refusal(self.limit)
        headers = Headers()
        for name, value in raw_headers:
            headers.addRawHeader(name, value)
        channel = self.channel
        channel.writeHeaders(b"HTTP/1.1", b"413", http.RESPONSES[413], headers)
        channel.write(body)
        # Stops reading at once (the rest of the body stays unread), sends what is written,
        # then closes; the channel's connectionLost ends this request without the app.
        channel.loseConnection()
        # daphne's access record, as for an answer from the application. The method and
        # path are still the channel's: the request gets them only when its body is in.
        peer = self.getClientAddress()
        self.server.log_action(
            "http",
            "complete",
            {
                "path": getattr(channel, "_path", b"?").decode("ascii", "replace"),
                "status": 413,
                "method": getattr(channel, "_command", b"?").decode("ascii", "replace"),
                "client": f"{peer.host}:{peer.port}" if hasattr(peer, "port") else None,
                "time_taken": 0.0,
                "size": len(body),
            },
        )


class BodyLimitHTTPFactory(http_protocol.HTTPFactory):
    """daphne's HTTP factory, whose connections make BodyLimitRequests."""

    def buildProtocol(self, addr):
        """Called by Twisted for each accepted connection."""
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BodyLimitRequest
        return protocol


def install() -> None:
    """Has daphne's Server (whose run() makes its factory by this name) use ours."""
    daphne_server.HTTPFactory = BodyLimitHTTPFactory
