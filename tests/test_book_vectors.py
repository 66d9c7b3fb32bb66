"""The dashboard's book vectors (tests/js/book-vectors.json) are what markets.book computes."""

from pathlib import Path

from tests.book_vectors import as_json

VECTORS = Path(__file__).parent / "js" / "book-vectors.json"


def test_the_js_vectors_match_the_python_book():
    assert VECTORS.read_text(encoding="utf-8") == as_json(), (
        "tests/js/book-vectors.json is out of date: "
        ".venv/bin/python -m tests.book_vectors > tests/js/book-vectors.json"
    )
