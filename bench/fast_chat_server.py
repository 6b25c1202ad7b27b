"""A minimal asyncio HTTP/1.1 server for the OpenAI chat route, fast enough to benchmark a client.

tests/fake_api.py is the faithful test double, but Python's http.server costs ~2 ms of CPU per
request: at 32 concurrent requests it, not the client, would be what the benchmark measures.
This one parses just enough HTTP (keep-alive, Content-Length bodies), waits --delay seconds
without holding a thread, and answers POST /v1/chat/completions with a real response shape.
Prints its port on the first line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from tests.fake_api import keyword_answer


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, key: str) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if headers.get("authorization") != f"Bearer {key}":
                status, payload = "401 Unauthorized", {"error": {"message": "Incorrect API key provided"}}
            else:
                request = json.loads(body)
                await asyncio.sleep(delay)
                text = keyword_answer(request["messages"], request["model"])
                status, payload = (
                    "200 OK",
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {"prompt_tokens": len(body) // 4, "completion_tokens": len(text), "total_tokens": 0},
                    },
                )
            data = json.dumps(payload, ensure_ascii=False).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(delay: float, key: str) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, delay, key), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--api-key", default="sk-bench")
    args = parser.parse_args()
    asyncio.run(serve(args.delay, args.api_key))


if __name__ == "__main__":
    main()
