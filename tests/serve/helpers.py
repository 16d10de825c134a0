"""Shared test helpers: an HTTP client over the app, and a snapshot of a store's files."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from starlette.testclient import TestClient

from neurondb.serve import create_app
from neurondb.store import open_store

BASE = "http://127.0.0.1"


@contextlib.contextmanager
def client(*roots: Path) -> Iterator[TestClient]:
    """A test client of the app over the store(s) ``roots`` (host 127.0.0.1)."""
    st = open_store(*roots)
    try:
        with TestClient(create_app(st), base_url=BASE, raise_server_exceptions=False) as c:
            yield c
    finally:
        st.close()


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: size, modification time and sha256."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = (0, 0, "")
    return out


class Html(HTMLParser):
    """What the tests look at in a page: scripts, inline styles and handlers, links, and
    the text of elements by id."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict] = []
        self.inline: list[str] = []
        self.links: list[str] = []
        self.ids: dict[str, str] = {}
        self.tags: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "script":
            self.scripts.append(a)
        for k in a:
            if k == "style" or k.startswith("on"):
                self.inline.append(f"{tag} {k}")
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag not in self.VOID:
            self._open.append((tag, a.get("id")))
            if a.get("id"):
                self.ids[a["id"]] = ""

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, i in self._open:
            if i:
                self.ids[i] += data
