"""Find secret values in configuration files, as exact byte spans (no parsing: regexes and a little scanning).

``find_secrets(data, name)`` returns the byte ranges of secret VALUES (never the key name, never the quotes)
sorted and non-overlapping, each with a reason such as ``key 'api_key'`` or ``shape sk-…`` that never
contains the value. The config connector cuts these ranges out and seals them; the finetune connector uses
it for job configs. The rule is "false positives are safer than leaks": a doubtful value is a secret.

What is a secret
----------------
1. **Env files** (named ``.env``, ``*.env`` or ``.env.*``): the value of every ``KEY=VALUE`` line (``export``
   prefix, single/double quotes (which may span lines), `` #`` comments after unquoted values), commented-out
   assignments (``# KEY=VALUE``) included: a value in a comment is still in the file.
2. **Secret-named keys** in any text file: a name is *strong* when it contains ``secret``, ``passw``
   (password, passwd), ``passphrase``, ``credential``, ``privatekey``/``private_key``, or has a word ``pass``,
   ``pw`` or ``pwd``; *weak* when it contains ``key`` or ``token`` (not only inside tokeniz*, keyword,
   keyboard, keyframe, keypoint, keystroke, monkey) or is ``auth``/``auths``/``authorization``. A name whose
   last word describes the secret rather than holding it (url, uri, endpoint, file, path, dir, env, var,
   name, type, length, len, size, count, limit, ttl, expiry, expires, header, prefix, id, ids, algorithm,
   format, location, enabled, metric) is not secret-named: ``token_url``, ``api_key_env``, ``password_file``;
   nor is ``<role>_key`` for a field role (text, label, prompt, response, chosen, rejected, input, output,
   sort, cache, primary, foreign, partition, column, field, message(s), content, role, image, target,
   source, group, hash, lookup, join, shard, dict, public, id): ``text_key: text`` names a field.
   Names are matched where a key can stand: at the start of a line (after indentation, ``- ``, ``*``, ``>``,
   ``export``, or comment markers ``#``/``//``/``;``, so commented-out keys count), after ``{ , [ (``
   (flows, JSON, call arguments), after ``? &`` (URL queries), after ``;`` (connection strings), as
   ``name=value`` anywhere, and inside a string (``"Authorization: Bearer …"``). Separators ``:`` and ``=``:
   YAML ``key: value``, JSON ``"key": "value"``, TOML/INI/properties ``key = value``, code ``key="v"``;
   also ``--key value`` / ``--key=value`` command-line flags and ``<key>value</key>`` XML elements.
   The value is the quoted string's inside (``"…"`` with escapes, ``'…'``, ``\"\"\"…\"\"\"``), or the unquoted
   text up to the end of the line and over deeper-indented continuation lines (YAML/TOML/env files: up to
   a `` #`` comment; JSON-style quoted keys and flows: up to ``, } ]``; queries up to ``&``; connection
   strings up to ``;``; ``name=value`` inline up to whitespace), after an auth scheme word of a weak name
   (``Bearer``/``Basic``/``Token``/``Digest``).
   A flow ``[…]``/``{…}`` or an indented YAML block (``key:`` then deeper lines, or ``key: |``) under a
   secret-named key: strong names give the whole inside as one value, weak names give each leaf value.
3. **Shapes**, anywhere (also in binary files, i.e. files holding a NUL byte, where only shapes are
   searched): OpenAI-style ``sk-…`` (20+ chars: sk-proj-, sk-ant-, sk-svcacct- …), AWS access key ids
   ``AKIA…``/``ASIA…`` and any 40-char base64-ish run within 512 bytes of one (the secret key), GitHub
   ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``, Slack ``xox?-`` tokens and webhook paths, Hugging Face
   ``hf_…``, Google ``AIza…``, Stripe ``sk_live_``/``rk_test_`` …, JWTs ``eyJ….eyJ….…``, whole
   ``-----BEGIN … PRIVATE KEY-----`` blocks (to the END line, or to the end of the data if none), the
   password of ``scheme://user:password@host`` (to the last ``@``; not one starting like a port,
   ``8080/``; a user part alone of 20+ chars is a token), ``Bearer`` tokens of 16+ chars holding a digit
   (or 24+ chars), and ``Authorization:`` header values.
4. The redaction placeholder ``REDACTED-BY-AIBACKUP`` is reported as a span wherever it stands, so a file
   restored from a redacted backup gives the same rows again (the connector tells placeholders from
   secrets by their text).

What is not a secret
--------------------
An empty value; a pure reference (``${NAME}``, ``{{ name }}``, ``{name}``, ``%(name)s``,
``os.environ/NAME``; not ``$NAME``: a password may start with ``$``); ``null``/``none``/``nil``/``~``/
``true``/``false``; a secret-named key mentioned in prose (``Never reveal the password to anyone``: no key
position or separator); a ``--flag`` followed by another ``--flag``; for weak names only, also
numbers of up to 12 digits (``max_tokens: 4096``) and tokenizer tokens (``<s>``, ``<|endoftext|>``,
``[PAD]``). Placeholders such as ``changeme`` or ``xxx`` ARE secrets: they may be real.
Not handled: UTF-16 text (only shapes in its bytes, which rarely match), secrets split over several
keys, and secret values under names matching none of the rules and no shape.
"""

from __future__ import annotations

import os

from aibackup.connectors.files.secrets.keys import env_spans, key_spans
from aibackup.connectors.files.secrets.rules import PLACEHOLDER, Span, name_strength
from aibackup.connectors.files.secrets.shapes import shape_spans

__all__ = ["PLACEHOLDER", "Span", "find_secrets", "is_env_file", "line_of", "name_strength"]


def is_env_file(name: str) -> bool:
    base = os.path.basename(name)
    return base == ".env" or base.endswith(".env") or base.startswith(".env.")


def find_secrets(data: bytes, name: str) -> list[Span]:
    """The secret values of a file's bytes, sorted and non-overlapping (see the module docstring).

    `name` is the file's name or relative path: it picks the env-file rule and where `` #`` starts a
    comment (env, YAML, TOML). A file holding a NUL byte is binary: only shapes are searched."""
    spans = shape_spans(data)
    if b"\x00" not in data:
        base = os.path.basename(name).lower()
        env = is_env_file(base)
        comments = env or base.endswith((".yaml", ".yml", ".toml"))
        spans += key_spans(data, comments, env)
        if env:
            spans += env_spans(data)
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    """Overlapping spans become one (the first one's reason): a value is cut out once."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= span.start:
            continue
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            if span.end > last.end:
                merged[-1] = Span(last.start, span.end, last.reason)
            continue
        merged.append(span)
    return merged


def line_of(data: bytes, offset: int) -> int:
    """The 1-based line number of a byte offset (for messages that name where a secret is, not what)."""
    return data.count(b"\n", 0, offset) + 1
