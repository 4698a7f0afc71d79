"""Bad input gets a 400 JSON error naming the problem; paging tokens are tamper-evident and
survive a restart of EO-MQS (same secret)."""

from __future__ import annotations

import json
import random

import pytest
import requests
from sitekit import TestSite, eomqs_server, make_item, serve

from cscale_extensions.services.eomqs.paging_token import TokenSigner


@pytest.fixture(scope="module")
def federation():
    rng = random.Random(1)
    site = TestSite([make_item("c1", n, rng) for n in range(30)])
    with serve(site.app) as s:
        yield [{"name": "one", "url": s.url}]


BAD_GET = [
    ({"bbox": "1,2,3"}, "InvalidBbox"),
    ({"bbox": "a,b,c,d"}, "InvalidBbox"),
    ({"bbox": "0,50,10,40"}, "InvalidBbox"),
    ({"bbox": "0,0,200,10"}, "InvalidBbox"),
    ({"datetime": "2021-02-01T00:00:00Z/2021-01-01T00:00:00Z"}, "InvalidDatetime"),
    ({"datetime": "yesterday"}, "InvalidDatetime"),
    ({"datetime": "../.."}, "InvalidDatetime"),
    ({"collections": "nope"}, "UnknownCollection"),
    ({"limit": "0"}, "InvalidLimit"),
    ({"limit": "1.5"}, "InvalidParameter"),
    ({"datetime": "2021-01-01T00:00:00+0100"}, "InvalidDatetime"),
    ({"limit": "ten"}, "InvalidParameter"),
    ({"sortby": "-geometry"}, "InvalidSortby"),
    ({"sortby": "properties.a b"}, "InvalidSortby"),
    ({"filter": "eo:cloud_cover <<< 3"}, "InvalidFilter"),
    ({"filter": "id = 'a'", "filter-lang": "cql3"}, "InvalidFilter"),
    ({"query": '{"eo:cloud_cover": {"lt": 10}}'}, "UnsupportedParameter"),
    ({"fields": "id"}, "UnsupportedParameter"),
    ({"token": "garbage"}, "InvalidToken"),
    ({"intersects": '{"type": "Polygon"}'}, "InvalidIntersects"),
    ({"intersects": "not json"}, "InvalidIntersects"),
]


@pytest.mark.parametrize("params,code", BAD_GET)
def test_bad_get_parameters_are_400(federation, params, code):
    with eomqs_server(federation) as srv:
        r = requests.get(srv.url + "search", params=params, timeout=30)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["code"] == code and body["description"]


def test_oversized_body_is_413_json(federation):
    with eomqs_server(federation) as srv:
        r = requests.post(
            srv.url + "search",
            data=b"{" + b" " * 5_000_000 + b"}",
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 413 and r.json()["code"] == "RequestTooLarge"


def test_chunked_body_over_the_limit_is_refused_while_it_is_read(federation):
    """An anonymous chunked POST (no Content-Length) must not be read whole: EO-MQS answers
    413 once the bytes received pass the limit, long before the sender is done."""
    import select
    import socket

    total = 64 * 2**20
    chunk = b"[" + b"0," * (2**16 - 1)
    with eomqs_server(federation) as srv:
        host, port = "127.0.0.1", int(srv.url.rsplit(":", 1)[1].split("/")[0])
        sent, answer = 0, b""
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(
                b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            try:
                while sent < total:
                    if select.select([sock], [], [], 0)[0]:
                        break  # the server answered
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.settimeout(30)
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        status_line = answer.split(b"\r\n", 1)[0]
        assert b" 413 " in status_line, answer[:300]
        assert b"RequestTooLarge" in answer or b"content-length" in answer.lower()
        assert sent < total / 4, f"{sent} bytes were accepted before the answer"


def test_limit_above_the_maximum_gets_the_maximum(federation):
    with eomqs_server(federation, max_limit=4) as srv:
        doc = requests.get(srv.url + "search", params={"limit": 100000}, timeout=30).json()
        assert doc["numberReturned"] == 4


def test_bad_post_bodies_are_400(federation):
    ring = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    huge = {
        "type": "Polygon",
        "coordinates": [[[i * 1e-4, 0.0] for i in range(12000)] + [[0.0, 0.0]]],
    }
    cases = [
        ({"bbox": [0, 0, 1]}, "InvalidBbox"),
        (
            {"bbox": [0, 0, 1, 1], "intersects": {"type": "Polygon", "coordinates": [ring]}},
            "InvalidParameter",
        ),
        ({"intersects": huge}, "InvalidIntersects"),
        ({"intersects": {"type": "Polygon", "coordinates": [[[0, "x"]]]}}, "InvalidIntersects"),
        ({"limit": -1}, "InvalidLimit"),
        ({"sortby": [{"field": "id", "direction": "sideways"}]}, "InvalidSortby"),
        ({"collections": ["c1", ""]}, "InvalidParameter"),
        ({"filter": {"op": "<", "args": [1]}}, "InvalidFilter"),
        ({"filter": "id = 'a'", "filter-lang": "cql2-json"}, "InvalidFilter"),
        (
            {"filter": {"op": "=", "args": [{"property": "id"}, "a"]}, "filter-crs": "EPSG:3857"},
            "InvalidFilter",
        ),
        ({"fields": {"include": ["id"]}}, "UnsupportedParameter"),
    ]
    with eomqs_server(federation) as srv:
        for body, code in cases:
            r = requests.post(srv.url + "search", json=body, timeout=30)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["code"] == code, (body, r.json())
        r = requests.post(
            srv.url + "search",
            data="[1, 2",
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 400 and "code" in r.json()


def _next(doc):
    return [ln for ln in doc["links"] if ln["rel"] == "next"][0]


def test_tokens_forged_altered_foreign_or_stale_are_400(federation):
    with eomqs_server(federation) as srv:
        doc = requests.post(srv.url + "search", json={"limit": 5}, timeout=30).json()
        token = _next(doc)["body"]["token"]
        payload, sig = token.split(".")
        flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
        for bad in (f"{flipped}.{sig}", f"{payload}.{sig[:-1]}x", "x.y.z"):
            r = requests.post(srv.url + "search", json={"limit": 5, "token": bad}, timeout=30)
            assert r.status_code == 400 and r.json()["code"] == "InvalidToken"
        other = requests.post(
            srv.url + "search", json={"limit": 5, "token": token, "ids": ["c1-00001"]}, timeout=30
        )
        assert other.status_code == 400 and "different search" in other.json()["description"]
        # a correctly signed token that is too old
        signer = TokenSigner(b"test-secret", 60)
        real = json.loads(
            __import__("zlib").decompress(__import__("base64").urlsafe_b64decode(payload + "=="))
        )
        real["t"] -= 10 * 86400
        import base64
        import zlib

        p2 = (
            base64.urlsafe_b64encode(zlib.compress(json.dumps(real).encode())).rstrip(b"=").decode()
        )
        stale = f"{p2}.{signer._sig(p2.encode())}"
        r = requests.post(srv.url + "search", json={"limit": 5, "token": stale}, timeout=30)
        assert r.status_code == 400 and r.json()["code"] == "StaleToken"


def test_token_survives_a_restart_with_the_same_secret(federation):
    with eomqs_server(federation) as srv:
        doc = requests.post(srv.url + "search", json={"limit": 7}, timeout=30).json()
        nxt = _next(doc)
        expected = requests.post(nxt["href"], json=nxt["body"], timeout=30).json()["features"]
    with eomqs_server(federation) as srv2:
        r = requests.post(srv2.url + "search", json=nxt["body"], timeout=30)
        assert r.status_code == 200
        assert [f["id"] for f in r.json()["features"]] == [f["id"] for f in expected]
    with eomqs_server(federation, token_secret="another") as srv3:
        r = requests.post(srv3.url + "search", json=nxt["body"], timeout=30)
        assert r.status_code == 400 and r.json()["code"] == "InvalidToken"


def test_links_are_absolute_under_the_service_prefix_and_forwarded_origin(federation):
    with eomqs_server(federation, prefix="/services/eo-mqs/") as srv:
        r = requests.get(
            srv.url,
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.org"},
            timeout=30,
        )
        links = {(ln["rel"], ln.get("method")): ln["href"] for ln in r.json()["links"]}
        assert links[("self", None)] == "https://hub.example.org/services/eo-mqs/"
        assert links[("search", "POST")] == "https://hub.example.org/services/eo-mqs/search"
        assert links[("service-desc", None)] == "https://hub.example.org/services/eo-mqs/api"
        r = requests.get(srv.url + "search", params={"limit": 2}, timeout=30)
        nxt = _next(r.json())["href"]
        assert nxt.startswith(srv.url + "search?") and "token=" in nxt
        assert requests.get(nxt, timeout=30).status_code == 200
        assert requests.get(srv.url + "api", timeout=30).json()["paths"]
    with eomqs_server(federation, public_url="https://stac.example.org/eo") as srv:
        r = requests.get(srv.url, timeout=30)
        assert r.json()["links"][0]["href"] == "https://stac.example.org/eo/"


def test_number_matched_only_for_a_single_site(federation):
    with eomqs_server(federation) as srv:
        doc = requests.post(srv.url + "search", json={"limit": 5}, timeout=30).json()
        assert doc["numberMatched"] == 30 and doc["numberReturned"] == 5
    with eomqs_server(federation + [{"name": "two", "url": federation[0]["url"]}]) as srv:
        doc = requests.post(srv.url + "search", json={"limit": 5}, timeout=30).json()
        assert "numberMatched" not in doc
        assert doc["federation:sites"]["one"]["matched"] == 30
        # the same items at two sites come out once, naming both
        assert all(f["properties"]["federation:sites"] == ["one", "two"] for f in doc["features"])
