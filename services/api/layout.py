"""The frame every web page shares: style, navigation, security headers, error pages.

Imported by ``app`` (error pages for the middleware) and by the page modules;
it imports only ``html``, so the api modules form no circle.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from wrtci.services.api.html import Markup, element, render

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 100%; }
nav { margin-bottom: .5em; } nav a { margin-right: 1em; }
h1 { font-size: 1.5em; overflow-wrap: anywhere; word-break: break-word; }
h2 { font-size: 1.2em; overflow-wrap: anywhere; }
.sub { color: #555; overflow-wrap: anywhere; margin-top: -.5em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
/* a table wider than a narrow screen scrolls by itself instead of the page */
table { display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td { overflow-wrap: break-word; }  /* words stay whole: a wide table scrolls instead */
code, .id { font-family: monospace; font-size: .9em; }
form.filters { margin: .5em 0; } form.filters label { margin-right: .8em; }
.s-pass, .r-pass, .v-pass { color: #176f2c; }
.s-fail, .r-fail, .v-fail, .v-regression { color: #b00020; font-weight: bold; }
.s-error, .r-error, .v-error { color: #b35900; }
.v-running, .v-queued { color: #1a4f9c; } .v-waiting { color: #7a5b00; }
.s-skip, .s-miss, .r-skip, .v-skip, .v-cancelled, .v-none { color: #666; }
.regression { color: #b00020; } .offline { color: #b00020; } .online { color: #176f2c; }
.h-healthy { color: #176f2c; } .h-warning { color: #b35900; } .h-unhealthy { color: #b00020; }
.stage { font-weight: bold; color: #1a4f9c; }
.log { font-family: monospace; font-size: .85em; background: #111; color: #ddd;
       padding: .5em; overflow-x: auto; white-space: pre; line-height: 1.3; }
.log > div { min-height: 1.3em; } .log > div:target { background: #443; }
.log a.n { display: inline-block; width: 5em; color: #777; text-align: right;
           margin-right: 1em; text-decoration: none; user-select: none; }
.a-bold { font-weight: bold; } .a-dim { opacity: .7; } .a-ul { text-decoration: underline; }
.a-30 { color: #888; } .a-31 { color: #f55; } .a-32 { color: #5d5; } .a-33 { color: #dd5; }
.a-34 { color: #78f; } .a-35 { color: #d5d; } .a-36 { color: #5dd; } .a-37 { color: #eee; }
.matrix td { text-align: center; } .matrix th.fw { font-weight: normal; font-size: .85em; }
"""
SCRIPT_PATH = "/static/wrtci.js"
# Scripts only from our own origin (the one small file below), never inline: an
# escaping slip in a page still could not run anything.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "script-src 'self'; connect-src 'self'; img-src 'self'",
           "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin"}
NAV = (("/", "Firmware"), ("/matrix", "Matrix"), ("/fleet", "Fleet"),
       ("/regressions", "Regressions"), ("/flaky", "Flaky tests"), ("/prs", "Pull requests"))


def page(title: str, body: Markup, status: int = 200, headers: dict[str, str] | None = None,
         subtitle: object = "") -> web.Response:
    nav = Markup("".join(element("a", text, href=href) for href, text in NAV))
    text = render(
        """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · wrtci</title>
<style>$style</style><script src="$script" defer></script></head>
<body><nav>$nav</nav>
<h1>$title</h1>$subtitle
$body
</body></html>
""", title=title, style=Markup(STYLE), script=SCRIPT_PATH, nav=nav, body=body,
        subtitle=element("p", subtitle, class_="sub") if subtitle else "")
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={**HEADERS, **(headers or {})})


def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return page(f"Error {status}", element("p", message, class_="error"), status, headers)


_SCRIPT = None


async def script(request: web.Request) -> web.Response:
    global _SCRIPT
    if _SCRIPT is None:
        _SCRIPT = resources.files("wrtci.services.api").joinpath("static/wrtci.js").read_bytes()
    return web.Response(body=_SCRIPT, content_type="text/javascript",
                        headers={"Cache-Control": "max-age=300", **HEADERS})
