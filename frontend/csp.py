"""The dashboard's one CSP allowance: Plotly's own <style> elements, by hash.

The site-wide policy (settings.CONTENT_SECURITY_POLICY) allows no inline style at all.
Plotly.js needs two <style> elements, and the dashboard's response allows exactly them:

- an empty one, that it fills with its chart rules (modebar, hover) through CSSOM
  (insertRule). CSP does not govern CSSOM, but Chromium gives an inline <style> no sheet
  unless the policy allows its text, here the empty string;
- one holding MapLibre's stylesheet, which the bundle adds when it loads (for map traces
  the dashboard never draws). Its hash is read from the plotly.min.js that is served, so
  it follows plotly upgrades; the browser test (tests/test_browser_csp.py) fails if a
  future bundle adds a style this does not find.

A hash admits that exact text and nothing else, so neither opens the page to injected CSS.
"""

import base64
import hashlib
import re

from .finders import PLOTLY_JS

EMPTY_STYLE_HASH = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
# What the bundler emits for a stylesheet the bundle inlines: a <style> with a fixed id
# whose text is one single-quoted JavaScript string.
_INLINED_STYLESHEET = re.compile(
    r"document\.getElementById\(\"([0-9a-f]{64})\"\)\)\{var (\w+)=document\.createElement"
    r"\(\"style\"\);\2\.id=\"\1\",\2\.textContent='([^'\\]*)'"
)


def style_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def plotly_style_hashes() -> list[str]:
    """CSP sources for the <style> elements plotly.min.js creates."""
    bundle = PLOTLY_JS.read_text(encoding="utf-8")
    return [EMPTY_STYLE_HASH, *(style_hash(m[2]) for m in _INLINED_STYLESHEET.findall(bundle))]
