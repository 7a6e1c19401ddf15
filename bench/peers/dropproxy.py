"""A TCP proxy that drops one connection once a given number of client bytes went through.

    dropproxy.py LISTEN_PORT TARGET_PORT CUT_BYTES REPORT_JSON

Forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. Client-to-server bytes are counted
over all connections; the connection during which the count reaches CUT_BYTES gets exactly
up to CUT_BYTES forwarded, then both of its sockets are closed (the server sees the peer
vanish mid-upload, the client a reset). Later connections pass untouched. REPORT_JSON is
rewritten after every connection ends: per connection, the bytes read from the client, the
bytes forwarded, whether it was cut, the first 4 KiB it carried (to read an HTTP request
head) and the cut's epoch time. Used by bench/peers.py's drop-at-50 % resume runs only
(never for timed figures: it costs CPU).
"""

import asyncio
import json
import os
import sys
import time

LISTEN, TARGET, CUT, REPORT = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
total = 0
cut_done = False
conns: list[dict] = []


def save() -> None:
    # Atomic: the bench may read the report while a connection closes.
    with open(REPORT + ".tmp", "w") as f:
        json.dump(conns, f)
    os.replace(REPORT + ".tmp", REPORT)


async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
    global total, cut_done
    info = {"read": 0, "forwarded": 0, "cut": False, "head": "", "t_open": time.time()}
    conns.append(info)
    try:
        sr, sw = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        cw.close()
        return

    async def down() -> None:
        try:
            while data := await sr.read(1 << 16):
                cw.write(data)
                await cw.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            cw.close()

    t = asyncio.create_task(down())
    try:
        while data := await cr.read(1 << 16):
            info["read"] += len(data)
            if len(info["head"]) < 4096:
                info["head"] += data[: 4096 - len(info["head"])].decode("latin-1")
            if not cut_done and total + len(data) >= CUT:
                keep = CUT - total
                sw.write(data[:keep])
                await sw.drain()
                info["forwarded"] += keep
                total += keep
                cut_done = True
                info["cut"] = True
                info["t_cut"] = time.time()
                break
            sw.write(data)
            await sw.drain()
            info["forwarded"] += len(data)
            total += len(data)
    except OSError:
        pass
    finally:
        if info["cut"]:
            # Abort both sides: no FIN handshake, as when a network path dies.
            for w in (sw, cw):
                try:
                    w.transport.abort()
                except Exception:
                    pass
        else:
            try:
                sw.write_eof()
            except OSError:
                pass
        try:
            await asyncio.wait_for(t, 30)
        except Exception:
            t.cancel()
        sw.close()
        info["t_close"] = time.time()
        save()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    save()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
