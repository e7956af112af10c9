"""The dashboard's sign-in page: self-contained (inline CSS, no script), so it works under
the dashboard's Content-Security-Policy and before any session exists."""

from __future__ import annotations

from html import escape

USED_CODE = (
    "This sign-in link was used already or has expired; run `sagellm ui` again or paste the token."
)

_STYLE = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { display: grid; place-items: center; min-height: 100vh; margin: 0; }
form { display: grid; gap: .75rem; width: min(24rem, 90vw); }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
input, button { font: inherit; padding: .5rem; }
#sign-in-error { color: #c62828; margin: 0; }
code { font-size: .95em; }
"""


def signin_page(next_path: str, token_path: str, error: str | None = None) -> str:
    """The form; `error` (shown in #sign-in-error) says why the last attempt failed."""
    message = f'<p id="sign-in-error" role="alert">{escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to sagellm</title>
<style>{_STYLE}</style>
</head>
<body>
<form method="post" action="/ui/signin">
<h1>Sign in to sagellm</h1>
{message}
<label for="token">Daemon token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required
 autofocus>
<input type="hidden" name="next" value="{escape(next_path)}">
<button id="sign-in" type="submit">Sign in</button>
<p>Run <code>sagellm ui</code> for a sign-in link, or paste the token from
<code>{escape(token_path)}</code>.</p>
</form>
</body>
</html>
"""
