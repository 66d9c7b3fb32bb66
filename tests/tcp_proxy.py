"""A TCP forwarder on 127.0.0.1, run as its own process: ``python tests/tcp_proxy.py TARGET_PORT``.

It prints the port it listens on, then copies bytes both ways. The operations tests put
it between a web process and Redis for the channel layer only, then freeze it with
SIGSTOP: the receive path stalls while Redis itself, the producer and the REST health
check all carry on (tests/test_ops_live.py).
"""

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(target_port: int) -> None:
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
