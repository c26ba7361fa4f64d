"""Extract Meta's own normalization test vectors (input -> expected normalized string) into tests/data/meta_oracle.json.

Meta's libraries ship unit tests written by Meta engineers. This script reads them from local bare git clones
(``git --git-dir=... show <commit>:<path>``) and records, for every input -> expected pair it can read, the
repository, commit, path and line it came from. Only those data pairs are written: never the libraries' code.

    python scripts/extract_meta_oracle.py --repo facebook/capi-param-builder=/path/to/repo.git \\
        --repo facebook/facebook-java-business-sdk=... --repo facebook/facebook-ruby-business-sdk=... \\
        --repo facebook/facebook-nodejs-business-sdk=... > tests/data/meta_oracle.json

What is read (each suite's own literal shapes; a pair whose input or expected value is not a literal is counted
under ``unread`` per file, never dropped silently):
- capi-param-builder ``client_js/shared/tests/*.test.js``: ``{input: ..., expected: ...}`` tables and
  ``expect(getNormalizedX(<literal>)).toEqual(<literal>)`` / ``.toBeNull()``;
- capi-param-builder ``php/capi-param-builder/tests/*Test.php``: ``$x = <literal>; $expected = <literal>;
  X::getNormalizedY($x)`` functions and ``[<input>, <expected>]`` tables;
- facebook-java-business-sdk ``ServerSideNormalizationTest.java``: ``new String[]{input, expected}`` tables
  (an expected ``Invalid ...`` message is an exception: no value);
- facebook-ruby-business-sdk ``util_spec.rb``: ``normalize(<literal>, '<field>')`` expectations;
- facebook-nodejs-business-sdk ``__tests__/*.test.js``: ``normalizeAndHash(value, '<field>')`` expectations.

An expected ``null`` / ``nil`` / exception / empty string means "the library sends nothing".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

# A string literal in the suites' languages: '...' or "..." (escapes inside), or `...` without ${}.
LIT = r"""(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`[^`$\\]*`)"""
VALUE = rf"(?:{LIT}|null|nil)"

FIELDS_BY_FUNCTION = {
    "city": "ct", "country": "country", "dob": "db", "email": "em", "externalid": "external_id",
    "gender": "ge", "name": "fn", "firstname": "fn", "lastname": "ln", "phone": "ph", "state": "st",
    "zipcode": "zp",
}  # fmt: skip
FIELDS_BY_TYPE = {
    "EMAIL": "em", "PHONE": "ph", "PHONE_NUMBER": "ph", "GENDER": "ge", "DATE_OF_BIRTH": "db",
    "LAST_NAME": "ln", "FIRST_NAME": "fn", "CITY": "ct", "STATE": "st", "ZIP_CODE": "zp", "COUNTRY": "country",
    "EXTERNAL_ID": "external_id", "CURRENCY": "currency",
}  # fmt: skip


@dataclass(frozen=True)
class Pair:
    library: str  # which normalizer the expectation describes
    repo: str
    commit: str
    path: str
    line: int
    field: str  # user_data key (or the library's own key when the relay has no such field)
    input: str
    expected: str | None  # None: the library sends nothing (null, exception, empty string)


def decode(literal: str) -> str | None:
    if literal in ("null", "nil"):
        return None
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\" or i + 1 == len(body):
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if quote == "'" and nxt not in "\\'":
            # single quotes: JS still reads escapes; PHP/Ruby only \\ and \'. The suites use none of the others
            # inside single quotes except JS \u / \n, handled below.
            pass
        simple = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"', "/": "/", "v": "\v",
                  "f": "\f", "b": "\b"}  # fmt: skip
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "u" and body[i + 2 : i + 3] == "{":
            end = body.index("}", i)
            out.append(chr(int(body[i + 3 : end], 16)))
            i = end + 1
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(nxt)
            i += 2
    text = "".join(out)
    # Java/JS strings are UTF-16: join surrogate pairs written as two \\u escapes.
    return text.encode("utf-16", "surrogatepass").decode("utf-16")


def field_of_function(name: str) -> str | None:
    return FIELDS_BY_FUNCTION.get(name.lower().replace("_", ""))


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blocks(text: str, start_re: str) -> list[tuple[int, int]]:
    """(start, end) offsets of consecutive blocks beginning at each match of ``start_re``."""
    starts = [m.start() for m in re.finditer(start_re, text)]
    return list(zip(starts, [*starts[1:], len(text)], strict=False))


def _expected(value: str | None) -> str | None:
    return None if value is None or value == "" else value


class Extractor:
    def __init__(self, repo: str, git_dir: str) -> None:
        self.repo = repo
        self.git_dir = git_dir
        self.commit = self._git("rev-parse", "HEAD").strip()
        self.pairs: list[Pair] = []
        self.unread: Counter[str] = Counter()

    def _git(self, *args: str) -> str:
        command = ["git", "--git-dir", self.git_dir, *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603

    def files(self, pattern: str) -> list[str]:
        return [
            p for p in self._git("ls-tree", "-r", "--name-only", self.commit).splitlines() if re.fullmatch(pattern, p)
        ]

    def show(self, path: str) -> str:
        return self._git("show", f"{self.commit}:{path}")

    def add(self, library: str, path: str, text: str, offset: int, field: str | None, raw_in: str,  # noqa: PLR0917
            raw_expected: str | None) -> None:  # fmt: skip
        if field is None:
            self.unread[f"{path}: no field"] += 1
            return
        value = decode(raw_in) if raw_in.startswith(("'", '"', "`")) else None
        if value is None:
            self.unread[f"{path}: input not a string literal"] += 1
            return
        if path.endswith(".php") and any(r and r.startswith('"') and "$" in r for r in (raw_in, raw_expected)):
            self.unread[f"{path}: interpolated PHP string"] += 1
            return
        expected = _expected(decode(raw_expected)) if raw_expected is not None else None
        self.pairs.append(Pair(library, self.repo, self.commit, path, _line(text, offset), field, value, expected))

    # ----------------------------------------------------------------------------- capi-param-builder JS
    def param_builder_js(self) -> None:
        for path in self.files(r"client_js/shared/tests/\w+\.test\.js"):
            text = self.show(path)
            for start, end in _blocks(text, r"\n\s*(?:it|test)\("):
                block = text[start:end]
                field = self._js_field(block)
                for m in re.finditer(rf"\{{\s*input:\s*({VALUE})\s*,(?:\s*//[^\n]*)?\s*expected:\s*({VALUE})", block):
                    self.add("capi-param-builder/js", path, text, start + m.start(), field, m[1], m[2])
                for m in re.finditer(
                    rf"expect\(\s*getNormalized(\w+)\(\s*({VALUE})\s*(?:,\s*PII_DATA_TYPE\.(\w+)\s*)?\)\s*\)\s*"
                    rf"\.(?:toEqual\(\s*({VALUE})\s*\)|toBe\(\s*({VALUE})\s*\)|(toBeNull)\(\))",
                    block,
                ):
                    f = FIELDS_BY_TYPE.get(m[3] or "") if m[1] == "PII" else field_of_function(m[1])
                    exp = m[4] or m[5] or None
                    self.add("capi-param-builder/js", path, text, start + m.start(), f, m[2], exp)

    @staticmethod
    def _js_field(block: str) -> str | None:
        if m := re.search(r"PII_DATA_TYPE\.(\w+)", block):
            return FIELDS_BY_TYPE.get(m[1])
        if m := re.search(r"getNormalized(\w+)\(\s*input", block):
            return field_of_function(m[1])
        return None

    # ---------------------------------------------------------------------------- capi-param-builder PHP
    def param_builder_php(self) -> None:
        for path in self.files(r"php/capi-param-builder/tests/\w+Test\.php"):
            text = self.show(path)
            for start, end in _blocks(text, r"\n\s*(?:public|private|protected)\s+function\s+test"):
                block = text[start:end]
                call = re.search(
                    r"\w+::getNormalized(\w+)\(\s*(\$\w+|" + LIT + r")\s*(?:,\s*PII_DATA_TYPE::(\w+))?", block
                )
                if call is None:
                    continue
                field = FIELDS_BY_TYPE.get(call[3] or "") if call[1] == "PII" else field_of_function(call[1])
                variables = {m[1]: m[2] for m in re.finditer(rf"\$(\w+)\s*=\s*({VALUE})\s*;", block)}
                tables = list(re.finditer(rf"\[\s*({LIT})\s*,\s*({VALUE})\s*\]", block))
                for m in tables:
                    self.add("capi-param-builder/php", path, text, start + m.start(), field, m[1], m[2])
                if tables:
                    continue
                raw_in = variables.get(call[2][1:], "") if call[2].startswith("$") else call[2]
                if re.search(r"assertNull\(\s*\$result\s*\)", block):
                    self.add("capi-param-builder/php", path, text, start + call.start(), field, raw_in, None)
                elif m := re.search(rf"assert(?:Equals|Same)\(\s*(\$\w+|{VALUE})\s*,\s*\$result\s*\)", block):
                    exp = variables.get(m[1][1:]) if m[1].startswith("$") else m[1]
                    if m[1].startswith("$") and m[1][1:] not in variables:
                        self.unread[f"{path}: expected not a literal"] += 1
                        continue
                    self.add("capi-param-builder/php", path, text, start + call.start(), field, raw_in, exp)
                else:
                    self.unread[f"{path}: no assertion read"] += 1

    # ---------------------------------------------------------------------------------------- Java SDK
    def java_sdk(self) -> None:
        for path in self.files(r".*/ServerSideNormalizationTest\.java"):
            text = self.show(path)
            for start, end in _blocks(text, r"\n\s*@Test"):
                block = text[start:end]
                constant = re.search(r"ServerSideApiConstants\.(\w+)", block)
                field = FIELDS_BY_TYPE.get(constant[1]) if constant else None
                raises = "getMessage().contains(expected)" in block
                for m in re.finditer(rf"new String\[\]\{{\s*({LIT})\s*,\s*({LIT})\s*\}}", block):
                    exp: str | None = m[2]
                    if raises and (decode(m[2]) or "").startswith("Invalid"):
                        exp = None  # the library throws
                    self.add("java-business-sdk", path, text, start + m.start(), field, m[1], exp)

    # ---------------------------------------------------------------------------------------- Ruby SDK
    def ruby_sdk(self) -> None:
        for path in self.files(r"spec/.*/server_side/util_spec\.rb"):
            text = self.show(path)
            call = r"FacebookAds::ServerSide::Util\.normalize\(\s*(" + VALUE + r")\s*,\s*'(\w+)'\s*\)"
            for m in re.finditer(
                r"expect\("
                + call
                + r"\)\.to eq\((?:FacebookAds::ServerSide::Util\.sha256Hash\(("
                + LIT
                + r")\)|("
                + VALUE
                + r"))\)",
                text,
            ):
                if m[1] == "nil":
                    continue  # nil in, nil out: no value to normalize (not a pair)
                self.add("ruby-business-sdk", path, text, m.start(), m[2], m[1], m[3] or m[4])
            for m in re.finditer(r"expect\{" + call + r"\}\.to raise_error", text):
                self.add("ruby-business-sdk", path, text, m.start(), m[2], m[1], None)

    # ---------------------------------------------------------------------------------------- Node SDK
    def node_sdk(self) -> None:
        for path in self.files(r"__tests__/[\w-]+\.test\.js"):
            text = self.show(path)
            for start, end in _blocks(text, r"\n\s*(?:it|test)\("):
                block = text[start:end]
                call = re.search(r"normalizeAndHash\(\s*(\w+|" + LIT + r")\s*,\s*'(\w+)'\s*\)", block)
                if call is None:
                    continue
                variables: dict[str, str] = {}
                for m in re.finditer(rf"const (\w+)\s*=\s*(?:sha256\(({LIT})\)|({LIT}))\s*;", block):
                    if m[2]:
                        variables[m[1]] = json.dumps(hashlib.sha256((decode(m[2]) or "").encode()).hexdigest())
                        variables[m[1] + "#plain"] = m[2]
                    else:
                        variables[m[1]] = m[3]
                raw_in = variables.get(call[1], "") if not call[1].startswith(("'", '"')) else call[1]
                if "toThrow" in block:
                    self.add("nodejs-business-sdk", path, text, start + call.start(), call[2], raw_in, None)
                elif m := re.search(r"expect\(actual\)\.toBe\((\w+)\)", block):
                    name = m[1]
                    exp = variables.get(name + "#plain") if name != call[1] else raw_in
                    self.add("nodejs-business-sdk", path, text, start + call.start(), call[2], raw_in, exp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", required=True, help="owner/name=path/to/bare.git")
    args = parser.parse_args(argv)
    repos = dict(item.split("=", 1) for item in args.repo)
    handlers = {
        "facebook/capi-param-builder": ("param_builder_js", "param_builder_php"),
        "facebook/facebook-java-business-sdk": ("java_sdk",),
        "facebook/facebook-ruby-business-sdk": ("ruby_sdk",),
        "facebook/facebook-nodejs-business-sdk": ("node_sdk",),
    }
    pairs: list[dict[str, Any]] = []
    unread: dict[str, int] = {}
    sources: dict[str, str] = {}
    for repo, methods in handlers.items():
        if repo not in repos:
            raise SystemExit(f"missing --repo {repo}=...")
        extractor = Extractor(repo, repos[repo])
        for method in methods:
            getattr(extractor, method)()
        sources[repo] = extractor.commit
        pairs += [asdict(p) for p in extractor.pairs]
        unread |= dict(extractor.unread)
    document = {
        "about": "Input -> expected normalized string pairs read from Meta's libraries' unit tests by "
        "scripts/extract_meta_oracle.py (data only; each pair names its repository, commit, path and line).",
        "sources": sources,
        "unread": dict(sorted(unread.items())),
        "pairs": pairs,
    }
    json.dump(document, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    counts = Counter((p["library"], p["field"]) for p in pairs)
    for (library, field), n in sorted(counts.items()):
        print(f"{library:24} {field:12} {n}", file=sys.stderr)
    print(f"total {len(pairs)} pairs; unread {sum(unread.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
