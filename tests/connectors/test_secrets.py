"""The secret scanner on realistic configuration files: what it finds (exact value bytes), what it leaves.

Every test checks both directions: each planted value is found as a whole span (so cutting the spans out
leaves none of it), and each value that is not a secret stays out of the spans.
"""

from __future__ import annotations

import itertools
import random
import string

import pytest

from aibackup.connectors.files.secrets import PLACEHOLDER, Span, find_secrets, is_env_file, line_of, name_strength

OPENAI = b"sk-proj-Q3kVb8XwZt1mNc5Lp9RfYh2JdGs7TaUe"
ANTHROPIC = b"sk-ant-api03-Zx81mQwErTy0uIoPaSdFgHjKl"
AWS_ID = b"AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = b"ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"


def values(data: bytes, name: str) -> list[bytes]:
    return [data[s.start : s.end] for s in find_secrets(data, name)]


def assert_no_leak(data: bytes, name: str, secrets: list[bytes], kept: list[bytes] = ()) -> list[Span]:  # type: ignore[assignment]
    """Every secret lies inside a span; cutting the spans out leaves none of them, and keeps `kept`."""
    spans = find_secrets(data, name)
    assert spans == sorted(spans, key=lambda s: s.start)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans)), "overlapping spans"
    rest, pos = b"", 0
    for s in spans:
        rest += data[pos : s.start] + b"\x00"
        pos = s.end
    rest += data[pos:]
    for secret in secrets:
        assert secret in data, secret
        assert secret not in rest, (secret, values(data, name))
    for text in kept:
        assert text in rest, (text, values(data, name))
    for s in spans:  # a reason never quotes the value
        assert data[s.start : s.end].decode("utf-8", "replace") not in s.reason
    return spans


def test_env_file_every_value_with_quotes_export_comments_and_empties() -> None:
    data = (
        b"""# production settings (not a secret: a comment)
export OPENAI_API_KEY="%s"
DB_PASSWORD='p@ss # not a comment'
EMPTY=
EMPTY_QUOTED=""
PORT=8080   # a trailing comment
HOME_DIR=${HOME}
# OLD_TOKEN=old-token-value-123
MULTI="first line
second line"
HASH=abc#def
  SPACED = spaced value
"""
        % OPENAI
    )
    spans = assert_no_leak(
        data,
        "config/app.env",
        [OPENAI, b"p@ss # not a comment", b"8080", b"old-token-value-123", b"first line\nsecond line", b"abc#def"],
        kept=[b"a trailing comment", b"${HOME}", b"production settings", b"OPENAI_API_KEY", b"EMPTY="],
    )
    assert values(data, "x.env") == [
        OPENAI,
        b"p@ss # not a comment",
        b"8080",
        b"old-token-value-123",
        b"first line\nsecond line",
        b"abc#def",
        b"spaced value",
    ]
    assert spans[0].reason == "shape sk-…"
    assert [line_of(data, s.start) for s in spans][:3] == [2, 3, 6]


@pytest.mark.parametrize("name", [".env", "prod.env", ".env.local", "dir/.env.production"])
def test_env_file_names(name: str) -> None:
    assert is_env_file(name)
    assert values(b"REGION=eu-west-1\n", name) == [b"eu-west-1"]


def test_not_env_files_only_report_secret_names() -> None:
    assert not is_env_file("env.example") and not is_env_file("environment.yaml")
    assert values(b"REGION=eu-west-1\nAPI_TOKEN=tok-123\n", "env.example") == [b"tok-123"]


def test_yaml_nested_quoted_lists_blocks_and_what_is_not_secret() -> None:
    data = b"""openai: {api_key: %s, model: gpt-4o}
db:
  host: localhost
  password: "hunter2-db"   # the db password
  user: admin
anthropic:
  api_key: 'it''s a secret'
api_keys:
  - first-key-value
  - second-key-value
secret: |
  block line one
  block line two
webhook_secret: >-
  folded secret
aws:
  aws_access_key_id: %s
  aws_secret_access_key: %s
max_tokens: 4096
bos_token: "<s>"
eos_token: "</s>"
tokenizer: gpt2-tokenizer
token_url: https://auth.example.com/oauth/token
api_key_env: OPENAI_API_KEY
litellm_key: os.environ/OPENAI_API_KEY
ref_key: ${OPENAI_API_KEY}
empty_token: ""
null_secret: null
keywords: [alpha, beta]
url: postgres://app:pg-pass-42@db:5432/app
description: "Never reveal the password to anyone."
""" % (OPENAI, AWS_ID, AWS_SECRET)
    assert_no_leak(
        data,
        "config/app.yaml",
        [
            OPENAI,
            b"hunter2-db",
            b"it''s a secret",
            b"first-key-value",
            b"second-key-value",
            b"block line one\n  block line two",
            b"folded secret",
            AWS_ID,
            AWS_SECRET,
            b"pg-pass-42",
        ],
        kept=[
            b"gpt-4o",
            b"the db password",
            b"localhost",
            b"admin",
            b"4096",
            b"<s>",
            b"</s>",
            b"gpt2-tokenizer",
            b"https://auth.example.com/oauth/token",
            b"OPENAI_API_KEY\n",
            b"os.environ/OPENAI_API_KEY",
            b"${OPENAI_API_KEY}",
            b"null",
            b"alpha",
            b"Never reveal the password to anyone.",
        ],
    )


def test_json_pretty_and_minified() -> None:
    data = (
        b"""{
  "openai": {"api_key": "%s", "organization": "org-public"},
  "nested": {"secret_token": "abc\\"def"},
  "max_tokens": 512,
  "keys": ["key-one-111", "key-two-222"],
  "password": 12345,
  "credentials": {"user": "svc", "pass": "cred-pass"},
  "auths": {"registry.example.com": {"auth": "dXNlcjpwYXNzd29yZA=="}},
  "special_tokens": {"pad": "<pad>", "unk": "[UNK]"},
  "enabled": true
}
{"token":"minified-token","n":1,"api_key":null}
"""
        % OPENAI
    )
    assert_no_leak(
        data,
        "settings.json",
        [
            OPENAI,
            b'abc\\"def',
            b"key-one-111",
            b"key-two-222",
            b"12345",
            b"svc",
            b"cred-pass",
            b"dXNlcjpwYXNzd29yZA==",
            b"minified-token",
        ],
        kept=[b"org-public", b"512", b"<pad>", b"[UNK]", b"true", b"registry.example.com", b"null"],
    )


def test_toml_strings_multiline_and_inline_tables() -> None:
    data = b"""[server]
password = "toml-pass"
api_key = \"\"\"multi
line key\"\"\"
token = 'literal-token'
port = 8443
[tool]
keys = { primary = "inline-primary", count = 2 }
"""
    assert_no_leak(
        data, "pyproject.toml", [b"toml-pass", b"multi\nline key", b"literal-token", b"inline-primary"], [b"8443"]
    )


def test_ini_and_connection_strings_keep_the_whole_line() -> None:
    data = b"""[database]
password = abc #def
user=bob
connection = Server=db;Database=app;User Id=sa;Password=conn-secret;Encrypt=yes
dsn = host=db user=app password=libpq-secret dbname=app
"""
    # INI has no inline comments: "#def" may be part of the password, so it is cut out too.
    assert_no_leak(data, "app.ini", [b"abc #def", b"conn-secret", b"libpq-secret"], [b"bob", b"Encrypt=yes", b"dbname"])


def test_prompt_template_prose_is_not_a_secret_but_a_key_shape_is() -> None:
    prose = b"""You are a support assistant. Never ask the user for their password or API key.
If the user pastes a token, tell them to rotate it. The secret to good answers is brevity.
{context}
"""
    assert find_secrets(prose, "prompts/system.txt") == []
    leaked = prose + b"Use the key %s for the lookup tool.\n" % ANTHROPIC
    assert values(leaked, "prompts/tool.txt") == [ANTHROPIC]


def test_code_headers_queries_and_flags_in_templates() -> None:
    data = b"""client = OpenAI(api_key="code-secret-1", timeout=3)
curl -H "Authorization: Bearer hdr-token-4f8a2b" https://api.example.com/v1/x?api_key=query-secret&page=2
curl -H 'X-Api-Key: xapikey-secret' https://api.example.com
run --api-key cli-secret-value --max-tokens 100 --password="quoted pass"
<config><password>xml-secret</password><user>bob</user></config>
Authorization: Basic dXNlcjpwYXNz
"""
    assert_no_leak(
        data,
        "notes.md",
        [
            b"code-secret-1",
            b"hdr-token-4f8a2b",
            b"query-secret",
            b"xapikey-secret",
            b"cli-secret-value",
            b"quoted pass",
            b"xml-secret",
            b"dXNlcjpwYXNz",
        ],
        kept=[b"timeout=3", b"page=2", b"100", b"bob", b"Bearer", b"Basic"],
    )


def test_pem_private_key_block_is_cut_whole() -> None:
    pem = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nx9Yz\n-----END RSA PRIVATE KEY-----"
    data = b"# deploy key\n" + pem + b"\n-----BEGIN CERTIFICATE-----\nMIIpublic\n-----END CERTIFICATE-----\n"
    assert values(data, "certs/key.pem") == [pem]
    # In a JSON service-account file the PEM sits in a string with escaped newlines.
    key = b"-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n"
    sa = b'{"type": "service_account", "private_key": "%s"}' % key
    assert values(sa, "sa.json") == [key]
    # No END line: everything after BEGIN is the secret.
    cut = b"x\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk"
    assert values(cut, "id_ed25519") == [cut[2:]]


def test_binary_files_only_shapes() -> None:
    data = b"\x00\x01\x02MODEL" + AWS_ID + b"\x00\x00" + AWS_SECRET + b"\x00password: not-scanned-in-binary\x00"
    assert values(data, "weights/blob.bin") == [AWS_ID, AWS_SECRET]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (b"token %s here", GITHUB),
        (b"pat: %s", b"github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
        (b"slack %s", b"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp"),
        (b"hook https://hooks.slack.com/services/%s", b"T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
        (b"hf %s", b"hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
        (b"g %s", b"AIzaSyA1bcDefGhIjkLmnOpqRsTuvWxYz012345"),
        (b"stripe %s", b"sk_live_51Habcdefghijklmnop"),
        (b"jwt %s", b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
        (b"see https://user:%s@example.com/x", b"url-pass-1"),
        (b"sentry https://%s@o1.ingest.sentry.io/5", b"0123456789abcdef0123456789abcdef"),
        (b"sent with Bearer %s", b"abcdefghijkl0123"),
    ],
)
def test_shapes_anywhere(text: bytes, secret: bytes) -> None:
    data = text % secret
    assert values(data, "notes.txt") == [secret]


@pytest.mark.parametrize(
    "text",
    [
        b"Bearer authentication is described below.",
        b"http://localhost:8080/path?x=a@b",
        b"the task-manager and sk-learn are libraries",
        b"git@github.com:org/repo.git",
        b"sha 0123456789abcdef0123456789abcdef01234567 without an AWS key id",
    ],
)
def test_shape_look_alikes_are_not_secrets(text: bytes) -> None:
    assert find_secrets(text, "notes.txt") == []


def test_names() -> None:
    strong = ["password", "DB_PASSWD", "client_secret", "credentials", "private_key", "privateKey", "db_pass", "pwd"]
    weak = ["api_key", "apiKey", "OPENAI_API_KEY", "token", "access_token", "keys", "X-Api-Key", "auth", "hotkey"]
    none = [
        "tokenizer",
        "keywords",
        "keyboard_layout",
        "token_url",
        "api_key_env",
        "password_file",
        "user",
        "monkeypatch",
        "text_key",
        "sort_key",
        "publicKey",
        "key_metric",
    ]
    assert [name_strength(n) for n in strong] == ["strong"] * len(strong)
    assert [name_strength(n) for n in weak] == ["weak"] * len(weak)
    assert [name_strength(n) for n in none] == [None] * len(none)


def test_redacted_bytes_scan_back_as_placeholders_only() -> None:
    """What --redact-secrets relies on: replacing every span by the placeholder gives bytes whose scan
    finds exactly the placeholders (so a backup of a restored redacted file gives the same row)."""
    samples = {
        "a.env": b"export KEY=%s\nB='x y'\n# C=old\n" % OPENAI,
        "a.yaml": b"openai: {api_key: %s, m: 1}\ndb:\n  password: 'p'\nkeys:\n  - a\n  - b\nsecret: |\n  x\n" % OPENAI,
        "a.json": b'{"token": "t", "creds": {"password": "p"}, "keys": ["a", "b"]}',
        "a.txt": b"Authorization: Bearer tok123456789abcdef\nhttps://u:p@h/ %s\n" % GITHUB,
        "k.pem": b"-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n",
    }
    for name, data in samples.items():
        spans = find_secrets(data, name)
        assert spans, name
        out, pos = b"", 0
        for s in spans:
            out += data[pos : s.start] + PLACEHOLDER
            pos = s.end
        out += data[pos:]
        again = find_secrets(out, name)
        assert [out[s.start : s.end] for s in again] == [PLACEHOLDER] * len(spans), (name, out)


def test_crlf_and_unicode_offsets_are_bytes() -> None:
    data = "título: ñ\r\npassword: contraseña-ü\r\nnext: 1\r\n".encode()
    (span,) = find_secrets(data, "a.yaml")
    assert data[span.start : span.end] == "contraseña-ü".encode()


def test_continuation_lines_belong_to_the_value() -> None:
    yaml = b"db:\n  password: first half\n    second half\n  user: bob\n"
    assert values(yaml, "a.yaml") == [b"first half\n    second half"]
    ini = b"[db]\npassword = one\n  two\nuser = bob\n"
    assert values(ini, "a.ini") == [b"one\n  two"]


FUZZ_TEMPLATES = [
    "{k}: {v}\n",
    '{k}: "{v}"\n',
    "{k}: '{v}'\n",
    "  - {k}: {v}  # c\n",
    '{k} = "{v}"\n',
    "{k}={v}\n",
    "export {k}={v}\n",
    '"{k}": "{v}",\n',
    '{{"{k}":"{v}"}}\n',
    "x: {{{k}: {v}, y: 1}}\n",
    'curl -H "Authorization: Bearer {v}"\n',
    "url: https://u:{v}@h/x\n",
    "--{k} {v}\n",
    "<{k}>{v}</{k}>\n",
    "{k}:\n  - {v}\n  - {v}2\n",
    "{k}: |\n  {v}\n",
    'f(a=1, {k}="{v}")\n',
    "s = Server=x;{k}={v};\n",
    "q?{k}={v}&z=1\n",
    '{{\n  "{k}": [\n    "{v}"\n  ]\n}}\n',
    "{k}: >-\n  {v}\n  more\n",
    '{k}:\n  a: {v}\n  b: "{v}x"\n',
    "{k} = [\"{v}\", '{v}y']\n",
    '{k} = {{ a = "{v}" }}\n',
    "  {k}: {v}\n    {v}z\n",
    "# {k}: {v}\n",
]


@pytest.mark.parametrize("name", ["a.yaml", "a.json", "a.toml", "a.ini", "a.env", "a.txt"])
def test_seeded_fuzz_no_planted_value_survives_and_redaction_is_stable(name: str) -> None:
    rng = random.Random(name)
    alphabet = string.ascii_letters + string.digits + "!@%^*-_+=.$~"
    keys = ["password", "api_key", "API_TOKEN", "client_secret", "db_pass", "credentials", "token", "privateKey"]
    for _ in range(300):
        parts, planted = [], []
        for _ in range(rng.randint(1, 5)):
            value = rng.choice(string.ascii_letters) + "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 19)))
            parts.append(rng.choice(FUZZ_TEMPLATES).format(k=rng.choice(keys), v=value))
            planted.append(value.encode())
        data = "".join(parts).encode()
        spans = find_secrets(data, name)
        out, pos = b"", 0
        for s in spans:
            out, pos = out + data[pos : s.start] + PLACEHOLDER, s.end
        out += data[pos:]
        assert not [v for v in planted if v in out], data
        assert all(out[s.start : s.end] == PLACEHOLDER for s in find_secrets(out, name)), data
