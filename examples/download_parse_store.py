"""Download -> parse -> store: a pipeline on three engines, against a local HTTP server.

* download: blocking HTTP GETs (``urllib``) on 16 threads - I/O waits, the GIL is free;
* parse: HTML parsing and word counting in worker processes - CPU work, one process per CPU;
* store: one writer thread appending rows to SQLite - a single connection, in source order.

The stages run at the same time, joined by bounded queues: downloading never runs more than a
few pages ahead of parsing, and the database sees the pages in the order of the URL list. The
web server is Python's own ``http.server``, in a thread of this script, on 127.0.0.1.

Run: ``python examples/download_parse_store.py`` (``TASKLOOM_SMALL=1``: 20 pages instead of 200).
"""

from __future__ import annotations

import collections
import html.parser
import http.server
import os
import re
import sqlite3
import threading
import urllib.request
from dataclasses import dataclass

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
PAGES = 20 if SMALL else 200
WORDS = ("loom", "thread", "process", "queue", "pipeline", "stage", "worker", "marker")


class PageHandler(http.server.BaseHTTPRequestHandler):
    """Serves /page/N: a small HTML page whose content depends on N."""

    def do_GET(self) -> None:
        n = int(self.path.rsplit("/", 1)[-1])
        body = " ".join(WORDS[(n * 7 + i) % len(WORDS)] for i in range(200 + n % 50))
        page = f"<html><head><title>Page {n}</title></head><body><p>{body}</p></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the example's output readable


def download(url: str) -> tuple[str, str]:
    """Stage 1 (threads): fetch one page."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return url, response.read().decode()


class _TextParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.text: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        else:
            self.text.append(data)


@dataclass(frozen=True)
class Page:
    url: str
    title: str
    words: int
    top_word: str


def parse(fetched: tuple[str, str]) -> Page:
    """Stage 2 (processes): parse the HTML and count the words (pure-Python CPU work)."""
    url, text = fetched
    parser = _TextParser()
    parser.feed(text)
    words = re.findall(r"[a-z]+", " ".join(parser.text).lower())
    top_word, _ = collections.Counter(words).most_common(1)[0]
    return Page(url, parser.title, len(words), top_word)


class Store:
    """Stage 3 (one writer thread): one SQLite connection, one row per page."""

    def __init__(self) -> None:
        # One writer thread uses it; check_same_thread=False because that thread is not this one.
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("CREATE TABLE pages (seq INTEGER PRIMARY KEY, url TEXT, title TEXT, words INT, top TEXT)")

    def __call__(self, page: Page) -> str:
        self.db.execute("INSERT INTO pages (url, title, words, top) VALUES (?, ?, ?, ?)",
                        (page.url, page.title, page.words, page.top_word))
        return page.url


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    threading.Thread(target=server.serve_forever, name="http-server", daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/page/{n}" for n in range(PAGES)]
    store = Store()
    try:
        pipe = (tl.pipeline(urls)
                .then(download, mode="threads", workers=16, name="download")
                .then(parse, mode="processes", name="parse", maxsize=16)
                .then(store, mode="threads", workers=1, name="store"))
        stored = pipe.collect()
    finally:
        server.shutdown()
        server.server_close()
    assert stored == urls, "the database saw the pages in URL order"
    store.db.commit()
    count, words = store.db.execute("SELECT COUNT(*), SUM(words) FROM pages").fetchone()
    print(f"stored {count} pages ({words} words) in source order")
    for row in store.db.execute("SELECT seq, title, words, top FROM pages ORDER BY seq LIMIT 3"):
        print("  row", row)
    print(pipe.statistics().table())
    store.db.close()


if __name__ == "__main__":
    main()
