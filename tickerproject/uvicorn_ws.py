"""uvicorn's websockets-sansio protocol, reading a client no faster than the app does.

uvicorn parses everything one socket read returns (up to 256 KiB) in one callback and
queues every frame for the app. A client flooding small frames (a ping command is 23
bytes on the wire) thus made the event loop parse some 11,000 frames in one go, and
every other client of the process waited: the healthy clients' p99 went from 30 to
200 ms while one connection flooded pings, though the command limiter answered only 20
of them a second (benchmarks/RESULTS.md, round 7).

``PacedWebSocketsProtocol`` parses at most ``SLICE_BYTES`` at a time, and the next
slice only once the app has taken every frame parsed so far; the socket is read again
only when nothing is left. A client's backlog stays in its own socket (and at most one
read here), and parsing it costs the loop a few milliseconds at a time, when the app
asks. ``tickerproject.serve`` runs uvicorn with ``--ws`` pointing here.
"""

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# About 170 ping commands: a few milliseconds of parsing on a slow core.
SLICE_BYTES = 4096


class PacedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol that parses a slice at a time, as the app reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._unparsed = bytearray()

    def data_received(self, data: bytes) -> None:
        """Called when the socket has data: keep it, and parse while the app keeps up."""
        self._unparsed += data
        self._parse_some()

    def _parse_some(self) -> None:
        if self.conn.parser_exc is not None or self.transport.is_closing():
            self._unparsed.clear()  # the connection is over; nothing more is read
            return
        # An open connection is parsed as the app reads. The handshake, and what follows
        # the server's close (the app reads no more, but the client's close must be
        # seen), are parsed whatever the queue holds: a slice per turn of the loop.
        paced = self.handshake_complete and not self.close_sent
        if self._unparsed and (self.queue.empty() or not paced):
            chunk = bytes(self._unparsed[:SLICE_BYTES])
            del self._unparsed[:SLICE_BYTES]
            super().data_received(chunk)
            if self._unparsed and not (paced and not self.queue.empty()):
                self.loop.call_soon(self._parse_some)
        if self._unparsed:
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
        elif self.read_paused and (self.queue.empty() or self.close_sent):
            self.read_paused = False
            self.transport.resume_reading()

    async def receive(self):
        """Called by the app for its next event: parse the next slice once it has all."""
        message = await self.queue.get()
        if self.queue.empty():
            self._parse_some()
        return message
