"""The LB adapters' parsing: HAProxy's `show proc`, and the shadow nginx main config for a fragment."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbgen.adapters.files import name_candidates
from lbgen.adapters.kinds.haproxy.control import parse_show_proc
from lbgen.adapters.kinds.nginx import shadow_main_config
from lbgen.errors import ApplyError, CommandFailed
from lbgen.core.values import Generation

SHOW_PROC_26 = """#<PID>          <type>          <reloads>       <uptime>        <version>
7541            master          2 [failed: 1]   0d00h10m13s     2.6.12-1+deb12u4
# workers
2663            worker          0               0d00h00m07s     2.6.12-1+deb12u4
2601            worker          1               0d00h01m07s     2.6.12-1+deb12u4
# programs

"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SHOW_PROC_26, Generation(7541, frozenset({2663, 2601}), reloads=2, failed=1)),
        (SHOW_PROC_26.replace(" [failed: 1]", ""), Generation(7541, frozenset({2663, 2601}), reloads=2)),
        ("#header\n7541 master 0 [failed: 0] 0d 2.6\n# workers\n", Generation(7541, frozenset(), 0, 0)),
    ],
    ids=["2.6", "no-failed-counter", "no-workers"],
)
def test_show_proc_is_read(text: str, expected: Generation) -> None:
    assert parse_show_proc(text) == expected


@pytest.mark.parametrize("text", ["", "# workers\n12 worker 0 0d 2.6\n", "garbage here\n"], ids=["empty", "no-master", "garbage"])
def test_unreadable_show_proc_is_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_show_proc(text)


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    for name in ("a.conf", "site.conf", "z.conf"):
        (tmp_path / "conf.d" / name).write_text(f"# {name}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("include", "dest", "expected"),
    [
        ("include conf.d/*.conf;", "conf.d/site.conf", ["conf.d/a.conf", "STAGED", "conf.d/z.conf"]),
        ('include "conf.d/*.conf";', "conf.d/new.conf", ["conf.d/a.conf", "STAGED", "conf.d/site.conf", "conf.d/z.conf"]),
        ("include {root}/conf.d/site.conf;", "conf.d/site.conf", ["STAGED"]),
    ],
    ids=["glob", "quoted-glob-new-file", "absolute-file"],
)
def test_the_include_of_dest_loads_the_candidate_and_keeps_the_other_fragments(
    conf: Path, include: str, dest: str, expected: list[str]
) -> None:
    main = conf / "nginx.conf"
    main.write_text(f"events {{}}\nhttp {{\n    include mime.types;\n    {include.format(root=conf)}\n}}\n")
    staged = conf / "conf.d" / ".staged"
    shadow = shadow_main_config(main, conf / dest, staged)
    files = [str(staged) if f == "STAGED" else str(conf / f) for f in expected]
    assert shadow == "events {}\nhttp {\n    include mime.types;\n" + "".join(f'    include "{f}";\n' for f in files) + "}\n"


def test_a_main_config_that_does_not_include_dest_is_an_error_naming_both(conf: Path) -> None:
    main = conf / "nginx.conf"
    main.write_text("http {\n    # include conf.d/*.conf;\n    include other/*.conf;\n}\n")
    with pytest.raises(ApplyError, match=r"vars.main_config: .*nginx.conf has no include that loads .*site.conf"):
        shadow_main_config(main, conf / "conf.d" / "site.conf", conf / ".staged")


@pytest.mark.parametrize(("output", "line"), [
    ("2026/12/03 16:11:05 [emerg] 1#1: unknown directive \"x\" in /e/.n.conf.ab12.lbgen:4\n"
     "nginx: configuration file /e/.n.conf.ab12.lbgen test failed\n",
     "2026/12/03 16:11:05 [emerg] 1#1: unknown directive \"x\" in /e/.n.conf.ab12.lbgen:4"),
    ("[NOTICE]   (9) : haproxy version is 2.6\n[ALERT]    (9) : config : parsing [/e/h.cfg:3] : unknown keyword 'x'\n"
     "[ALERT]    (9) : config : Fatal errors found in configuration.\n",
     "[ALERT]    (9) : config : parsing [/e/h.cfg:3] : unknown keyword 'x'"),
    ("first\nlast words\n", "last words"),
    ("", "no output"),
    ("[emerg] " + "x" * 1000, "[emerg] " + "x" * 292 + "..."),
], ids=["nginx", "haproxy", "other", "silent", "long"])
def test_a_failed_command_names_the_line_that_says_why(output: str, line: str) -> None:
    assert str(CommandFailed(["chk"], 1, output)) == f"chk exited 1: {line}"


def test_staged_files_are_named_by_their_dest() -> None:
    text = "in /etc/nginx/.nginx.conf.x1y_2.lbgen:4; /etc/nginx/.other.conf.abc.lbgen; /etc/nginx/nginx.conf"
    assert name_candidates(text, "/etc/nginx/nginx.conf") == (
        "in /etc/nginx/nginx.conf (candidate):4; /etc/nginx/.other.conf.abc.lbgen; /etc/nginx/nginx.conf")
