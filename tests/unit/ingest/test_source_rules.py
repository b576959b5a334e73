"""Sources that cannot be tricked: the hidden, secret and version-control rules judge where a file really is
(the target of every symbolic link, a hard link's twin), links leaving the root are refused, the same for
path, PVC and ConfigMap sources; URL redirects stay on the URL's origin unless the source names another, and
loopback, link-local and private addresses are refused unless the source names them. Real files and links
in tmp_path, real HTTP servers on 127.0.0.1; Hypothesis generates trees of links."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from raylight.api.types import PipelineSpec, Source
from raylight_pipelines.ingest import documents
from raylight_pipelines.ingest.documents import address_refusal, fetch, http_client, load_sources

SECRETS = {  # the handed cases' targets, each holding a marker that must never be ingested
    ".env": "API_KEY=SECRET-dotenv",
    "config/.env": "DB_PASSWORD=SECRET-configenv",
    ".aws/credentials": "[default]\naws_secret_access_key = SECRET-aws",
    ".git/config": '[remote "origin"]\nurl = https://x:SECRET-gittoken@github.com/a/b',
}
HANDED_LINKS = {"+env.md": ".env", "app-env.md": "config/.env", "cloud.md": ".aws/credentials",
                "zz-gitconfig.md": ".git/config"}


def make_tree(root: Path, files: dict[str, str], links: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(os.path.relpath(root / target, (root / rel).parent))


def texts(loaded: Any) -> str:
    return "\n".join(d.text for d in loaded.documents)


@pytest.mark.parametrize("hidden", [False, True])
def test_innocently_named_links_to_secret_files_are_skipped_like_their_targets(tmp_path: Path, hidden: bool) -> None:
    root = tmp_path / "root"
    make_tree(root, {**SECRETS, "readme.md": "# Readme\n\nPublic text."}, HANDED_LINKS)
    loaded = load_sources([Source(path="./root", hidden=hidden)], tmp_path)
    assert [d.source_id for d in loaded.documents] == ["path:root/readme.md"]
    assert "SECRET-" not in texts(loaded)
    reasons = {s.source_id.rsplit("/", 1)[1]: s.reason for s in loaded.skipped}
    for link, target in HANDED_LINKS.items():
        assert f"a link to {target}" in reasons[link], reasons
    assert "version-control" in reasons["zz-gitconfig.md"] and "secrets" in reasons["cloud.md"]


def test_links_to_hidden_folders_hard_links_and_links_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, {".drafts/plan.md": "SECRET-draft", "ok.md": "fine", ".ssh/id_ed25519": "SECRET-key"},
              {"public": ".drafts", "plan.md": ".drafts/plan.md", "chain.md": "plan.md", "keys": ".ssh"})
    os.link(root / ".ssh/id_ed25519", root / "notes.md")  # a hard link: the same inode, another name
    (tmp_path / "outside.md").write_text("SECRET-outside")
    (root / "escape.md").symlink_to(tmp_path / "outside.md")
    loaded = load_sources([Source(path="root")], tmp_path)
    assert [d.source_id for d in loaded.documents] == ["path:root/ok.md"]
    reasons = {s.source_id.removeprefix("path:root/"): s.reason for s in loaded.skipped}
    assert "hard link to .ssh/id_ed25519" in reasons["notes.md"]
    assert "outside the source root" in reasons["escape.md"]
    assert "hidden" in reasons["public/"] and "a link to .drafts/plan.md" in reasons["chain.md"]
    assert "hidden" in reasons["plan.md"]
    # with hidden: true the draft is a document (by its own name), the key never is
    shown = load_sources([Source(path="root", hidden=True)], tmp_path)
    assert "SECRET-draft" in texts(shown) and "SECRET-key" not in texts(shown)


def test_a_single_file_source_that_is_a_link_to_a_secret_is_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path, {".env": "SECRET-single"}, {"notes.md": ".env"})
    loaded = load_sources([Source(path="notes.md")], tmp_path)
    assert not loaded.documents and "secrets" in loaded.skipped[0].reason


def test_a_file_swapped_for_a_link_after_listing_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, {"a.md": "fine", ".env": "SECRET-swap"}, {})
    listing = documents.list_sources([Source(path="root")], tmp_path)
    (root / "a.md").unlink()
    (root / "a.md").symlink_to(".env")
    item = documents.load_unit(listing.units[0])
    assert isinstance(item, documents.Failure) and not isinstance(item, documents.Document)


def test_pvc_sources_follow_the_same_link_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "PVC_MOUNT_ROOT", str(tmp_path / "pvcs"))
    make_tree(tmp_path / "pvcs" / "docs" / "handbook", {**SECRETS, "a.md": "Public."}, HANDED_LINKS)
    loaded = load_sources([Source(pvc={"claim": "docs", "path": "/handbook"})], tmp_path)
    assert [d.source_id for d in loaded.documents] == ["pvc:docs/handbook/a.md"]
    assert "SECRET-" not in texts(loaded)


def test_a_mounted_configmap_key_that_links_outside_the_mount_is_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "CONFIGMAP_MOUNT_ROOT", str(tmp_path / "cms"))
    mount = tmp_path / "cms" / "notes"
    (mount / "..data").mkdir(parents=True)
    (mount / "..data" / "guide.md").write_text("Guide text.")
    (mount / "guide.md").symlink_to("..data/guide.md")
    (tmp_path / ".env").write_text("SECRET-cm")
    (mount / "extra.md").symlink_to(tmp_path / ".env")
    loaded = load_sources([Source(configMap={"name": "notes"})], tmp_path)
    assert [d.source_id for d in loaded.documents] == ["configmap:default/notes/guide.md"]
    assert "SECRET-" not in texts(loaded)


# ---------------------------------------------------------------- generated trees of links

NAMES = st.sampled_from(["a.md", "b.txt", "notes.md", "+env.md", "zz.md", "doc", "x.html"])
FOLDERS = st.sampled_from(["", "sub/", "sub/deep/", "other/"])
TARGETS = st.sampled_from([*sorted(SECRETS), ".drafts/plan.md", ".ssh/id_rsa", "pub/one.md", "pub/two.md"])
DIR_TARGETS = st.sampled_from([".git", ".aws", ".drafts", "config", "pub", "sub"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.lists(st.tuples(FOLDERS, NAMES, TARGETS | DIR_TARGETS), max_size=8),
       chains=st.lists(st.tuples(NAMES, st.integers(0, 7)), max_size=3), hardlinks=st.lists(st.tuples(NAMES, TARGETS),
                                                                                  max_size=2),
       hidden=st.booleans())
def test_no_tree_of_links_ingests_a_secret(links: list[tuple[str, str, str]], chains: list[tuple[str, int]],
                                          hardlinks: list[tuple[str, str]], hidden: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "root"
        files = {**SECRETS, ".drafts/plan.md": "HIDDEN-draft", ".ssh/id_rsa": "SECRET-sshkey",
                 "pub/one.md": "PUBLIC-one", "pub/two.md": "PUBLIC-two", "sub/keep.md": "PUBLIC-keep"}
        make_tree(root, files, {})
        made: set[str] = set()
        for folder, name, target in links:
            rel = f"link{len(made)}/{folder}{name}"  # unique, innocent names
            make_tree(root, {}, {rel: target})
            made.add(rel)
        for name, onto in chains:  # a link to a link
            if made:
                rel = f"chain/{name}"
                if not (root / rel).exists() and not (root / rel).is_symlink():
                    make_tree(root, {}, {rel: sorted(made)[onto % len(made)]})
        for name, target in hardlinks:
            rel = root / "hard" / name
            if not rel.exists():
                rel.parent.mkdir(exist_ok=True)
                os.link(root / target, rel)
        (base / "out.md").write_text("SECRET-outside")
        (root / "escape.md").symlink_to(base / "out.md")
        loaded = load_sources([Source(path="root", hidden=hidden)], base)
        text = texts(loaded)
        assert "SECRET-" not in text
        assert hidden or "HIDDEN-" not in text
        assert {"PUBLIC-one", "PUBLIC-two", "PUBLIC-keep"} <= {m for m in ("PUBLIC-one", "PUBLIC-two", "PUBLIC-keep")
                                                                if m in text}
        shutil.rmtree(root)


# ---------------------------------------------------------------- URLs

class Site:
    """A loopback HTTP server: path -> (status, headers, body); records every path requested."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes, self.requested = routes, []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requested.append(self.path)
                status, headers, body = site.routes.get(self.path, (404, {}, b"no"))
                self.send_response(status)
                for k, v in {"Content-Type": "text/markdown", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sites() -> Iterator[Callable[[dict[str, tuple[int, dict[str, str], bytes]]], Site]]:
    made: list[Site] = []

    def make(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Site:
        made.append(Site(routes))
        return made[-1]
    yield make
    for site in made:
        site.close()


def redirect(to: str) -> tuple[int, dict[str, str], bytes]:
    return 302, {"Location": to}, b""


LOOPBACK = ["127.0.0.1"]


def test_a_redirect_to_another_port_is_refused_and_never_requested(sites: Any, tmp_path: Path) -> None:
    secret = sites({"/.env": (200, {}, b"SECRET-redirect")})
    docs = sites({"/doc.md": redirect(f"{secret.origin}/.env")})
    loaded = load_sources([Source(urls=[f"{docs.origin}/doc.md"], privateNetworks=LOOPBACK)], tmp_path)
    assert not loaded.documents and secret.requested == []
    assert "another origin" in loaded.skipped[0].reason and "redirectOrigins" in loaded.skipped[0].reason
    # naming the origin allows the hop, and the secret-file rule still refuses /.env
    allowed = load_sources([Source(urls=[f"{docs.origin}/doc.md"], privateNetworks=LOOPBACK,
                                   redirectOrigins=[secret.origin])], tmp_path)
    assert not allowed.documents and secret.requested == [] and "secrets" in allowed.skipped[0].reason


def test_a_redirect_to_the_metadata_address_is_refused_before_any_connection(sites: Any, tmp_path: Path) -> None:
    meta = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    docs = sites({"/doc.md": redirect(meta)})
    loaded = load_sources([Source(urls=[f"{docs.origin}/doc.md"], privateNetworks=LOOPBACK)], tmp_path)
    assert not loaded.documents and "another origin" in loaded.skipped[0].reason
    named = load_sources([Source(urls=[f"{docs.origin}/doc.md"], privateNetworks=LOOPBACK,
                                 redirectOrigins=["http://169.254.169.254"])], tmp_path)
    assert not named.documents and "169.254.169.254 is a link-local address" in named.skipped[0].reason


def test_loopback_urls_need_the_source_to_name_them(sites: Any, tmp_path: Path) -> None:
    docs = sites({"/doc.md": (200, {}, b"# Doc\n\nLoopback docs."), "/old.md": redirect("/doc.md"),
                  "/leak.md": redirect("/.env"), "/loop.md": redirect("/loop.md")})
    refused = load_sources([Source(urls=[f"{docs.origin}/doc.md"])], tmp_path)
    assert not refused.documents and docs.requested == []
    assert "127.0.0.1 is a loopback address" in refused.skipped[0].reason
    urls = [f"{docs.origin}/{p}" for p in ("doc.md", "old.md", "leak.md", "loop.md")]
    loaded = load_sources([Source(urls=urls, privateNetworks=["127.0.0.0/8"])], tmp_path)
    assert [d.source_id for d in loaded.documents] == [f"url:{urls[0]}", f"url:{urls[1]}"]
    reasons = {s.source_id: s.reason for s in loaded.skipped}
    assert "secrets" in reasons[f"url:{urls[2]}"] and "more than 5 redirects" in reasons[f"url:{urls[3]}"]
    assert "/.env" not in docs.requested


def test_the_connected_address_is_checked_whatever_dns_answered(sites: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = sites({"/doc.md": (200, {}, b"Doc.")})
    # DNS rebinding: the check before connecting sees a public address, the connection reaches loopback
    monkeypatch.setattr(documents, "_resolve", lambda host, port: ["93.184.216.34"])
    with http_client() as client:
        response, refusal = fetch(f"{docs.origin}/doc.md", client)
    assert response is None and refusal is not None and "loopback" in refusal and docs.requested == []


@pytest.mark.parametrize(("ip", "kind"), [
    ("127.0.0.1", "loopback"), ("127.1.2.3", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.0.0.1", "private"),
    ("192.168.1.1", "private"), ("172.16.0.1", "private"), ("fd00::1", "private"), ("100.64.0.1", "non-public"),
    ("0.0.0.0", "private"), ("224.0.0.1", "non-public"),
])
def test_every_non_public_address_is_refused_unless_named(ip: str, kind: str) -> None:
    refusal = address_refusal(ip, [])
    assert refusal is not None and f"a {kind} address" in refusal
    assert address_refusal(ip, [ip]) is None
    assert address_refusal("93.184.216.34", []) is None


def test_redirect_origins_and_private_networks_are_validated_with_the_field_named() -> None:
    base = {"embedder": {"modelDeployment": "minilm"}}
    cases = [
        ({"path": "./docs", "privateNetworks": ["127.0.0.1"]}, "urls sources only"),
        ({"urls": ["http://127.0.0.1/a.md"], "privateNetworks": ["localhost"]}, "IP address or network"),
        ({"urls": ["https://x.org/a"], "redirectOrigins": ["https://x.org/path"]}, "must be an origin"),
    ]
    for source, message in cases:
        with pytest.raises(ValidationError, match=message):
            PipelineSpec.model_validate({**base, "sources": [source]})
    ok = PipelineSpec.model_validate({**base, "sources": [
        {"urls": ["http://127.0.0.1:8000/a.md"], "privateNetworks": ["127.0.0.1"],
         "redirectOrigins": ["https://docs.example.com/"]}]})
    assert ok.sources[0].private_networks == ["127.0.0.1/32"]
    assert ok.sources[0].redirect_origins == ["https://docs.example.com"]
    assert httpx.URL(ok.sources[0].urls[0]).host == "127.0.0.1"  # type: ignore[index]
