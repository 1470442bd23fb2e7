"""Lowering stages to steps (builder.plan.lower): scoping, expansion, history strings."""

from __future__ import annotations

import pytest

from builder.errors import DockerfileError, ExpansionError
from builder.plan.graph import StageRef
from builder.plan.lower import StageLowering, normalize_workdir, onbuild_triggers, resolve_dest, run_command_string
from builder.plan.state import DEFAULT_PATH, ImageConfigState
from builder.plan.steps import ConfigStep, CopyStep, RunStep
from builder.source import Span
from builder.syntax.ast import Heredoc, Node
from builder.syntax.instructions import Command, From, KeyValues, Single
from builder.syntax.parser import parse_text
from builder.syntax.typed import to_instructions
from test_plan_support import AMD64, final_state, graph_of, lower_all, steps_of


def runs(steps: list) -> list[RunStep]:
    return [s for s in steps if isinstance(s, RunStep)]


def by_kind(steps: list, kind: str) -> list[ConfigStep]:
    return [s for s in steps if isinstance(s, ConfigStep) and s.kind == kind]


# ---- ARG scoping --------------------------------------------------------------------------------

def test_stage_sees_meta_arg_only_when_redeclared() -> None:
    steps = steps_of("ARG V=1\nFROM alpine\nENV A=$V\nARG V\nENV B=$V\n")
    envs = by_kind(steps, "ENV")
    assert envs[0].created_by == "ENV A="
    assert envs[1].created_by == "ENV B=1"
    assert by_kind(steps, "ARG")[0].created_by == "ARG V=1"


def test_build_arg_overrides_stage_default() -> None:
    steps = steps_of("FROM alpine\nARG X=def\nRUN echo $X\n", build_args={"X": "cli"})
    assert by_kind(steps, "ARG")[0].created_by == "ARG X=cli"
    run = runs(steps)[0]
    assert ("X", "cli") in run.env
    assert run.created_by == "RUN |1 X=cli /bin/sh -c echo $X # buildkit"


def test_build_arg_overrides_meta_then_inherited() -> None:
    steps = steps_of("ARG V=1\nFROM alpine\nARG V\nRUN true\n", build_args={"V": "9"})
    assert runs(steps)[0].created_by == "RUN |1 V=9 /bin/sh -c true # buildkit"


def test_arg_default_expanded_with_earlier_args() -> None:
    steps = steps_of("FROM alpine\nARG A=x\nARG B=${A}y\nRUN true\n")
    assert runs(steps)[0].created_by == "RUN |2 A=x B=xy /bin/sh -c true # buildkit"
    assert by_kind(steps, "ARG")[1].used_args == (("A", "x"),)


def test_arg_without_value_shows_empty_in_run_history() -> None:
    steps = steps_of("FROM alpine\nARG EMPTY\nRUN true\n")
    assert by_kind(steps, "ARG")[0].created_by == "ARG EMPTY"
    run = runs(steps)[0]
    assert run.created_by == "RUN |1 EMPTY= /bin/sh -c true # buildkit"
    assert not any(k == "EMPTY" for k, _ in run.env)


def test_multi_name_arg_is_one_history_entry() -> None:
    steps = steps_of("FROM alpine\nARG A=1 B=$A C\nARG D=4\nRUN true\n")
    args = by_kind(steps, "ARG")
    assert [a.created_by for a in args] == ["ARG A=1 B=1 C", "ARG D=4"]
    assert args[0].used_args == (("A", "1"),)
    assert runs(steps)[0].created_by == "RUN |4 A=1 B=1 C= D=4 /bin/sh -c true # buildkit"


def test_arg_redeclared_later_in_stage() -> None:
    steps = steps_of("FROM alpine\nARG A=1\nRUN true\nARG A=2\nRUN true\n")
    r1, r2 = runs(steps)
    assert r1.created_by == "RUN |1 A=1 /bin/sh -c true # buildkit"
    assert r2.created_by == "RUN |1 A=2 /bin/sh -c true # buildkit"


def test_env_shadows_arg() -> None:
    steps = steps_of("FROM alpine\nARG V=arg\nENV V=env\nLABEL l=$V\nRUN true\n")
    assert by_kind(steps, "LABEL")[0].created_by == "LABEL l=env"
    assert by_kind(steps, "LABEL")[0].used_args == ()  # V now comes from ENV, not an ARG
    run = runs(steps)[0]
    assert run.created_by == "RUN |1 V=env /bin/sh -c true # buildkit"
    assert dict(run.env)["V"] == "env"
    assert ("V", "env") in final_state("FROM alpine\nARG V=arg\nENV V=env\n").env


def test_arg_declared_after_env_overrides_for_run_only() -> None:
    """BuildKit adds an ARG's value to the LLB state env after ENV: RUN and expansion see it,
    the image config keeps the ENV value."""
    text = "FROM alpine\nENV V=env\nARG V=arg\nLABEL l=$V\nRUN true\n"
    steps = steps_of(text)
    assert by_kind(steps, "LABEL")[0].created_by == "LABEL l=arg"
    assert dict(runs(steps)[0].env)["V"] == "arg"
    assert ("V", "env") in final_state(text).env


def test_arg_without_value_keeps_env_value() -> None:
    steps = steps_of("FROM alpine\nENV V=env\nARG V\nRUN true\n")
    assert runs(steps)[0].created_by == "RUN |1 V=env /bin/sh -c true # buildkit"
    assert dict(runs(steps)[0].env)["V"] == "env"


def test_env_pairs_expand_with_previous_values() -> None:
    steps = steps_of("FROM alpine\nENV A=1\nENV A=2 B=$A\n")
    assert by_kind(steps, "ENV")[1].created_by == "ENV A=2 B=1"


def test_arg_values_never_reach_image_env() -> None:
    st = final_state("FROM alpine\nARG SECRETISH=x\nRUN true\n")
    assert st.env == (("PATH", DEFAULT_PATH),)


def test_used_args_recorded_per_step() -> None:
    steps = steps_of("FROM alpine\nARG A=1\nARG B=2\nWORKDIR /w/$A\nCOPY x /d/$B/\n")
    assert by_kind(steps, "WORKDIR")[0].used_args == (("A", "1"),)
    copy = next(s for s in steps if isinstance(s, CopyStep))
    assert copy.used_args == (("B", "2"),)
    assert copy.dest == "/d/2/"


def test_platform_args_need_declaration() -> None:
    steps = steps_of("FROM alpine\nRUN echo\nARG TARGETARCH\nENV T=$TARGETARCH\n")
    assert runs(steps)[0].created_by == "RUN /bin/sh -c echo # buildkit"
    assert by_kind(steps, "ENV")[0].created_by == "ENV T=amd64"


def test_proxy_args_not_recorded() -> None:
    steps = steps_of("FROM alpine\nRUN wget x\n", build_args={"HTTP_PROXY": "http://p:3128", "no_proxy": "local"})
    run = runs(steps)[0]
    assert run.created_by == "RUN /bin/sh -c wget x # buildkit"
    assert not any("PROXY" in k.upper() for k, _ in run.env)
    assert dict(run.proxy_env) == {"HTTP_PROXY": "http://p:3128", "http_proxy": "http://p:3128",
                                   "NO_PROXY": "local", "no_proxy": "local"}
    assert run.used_args == ()
    assert final_state("FROM alpine\nRUN true\n", build_args={"HTTP_PROXY": "x"}).env == (("PATH", DEFAULT_PATH),)


def test_stage_from_stage_inherits_scope() -> None:
    text = "FROM alpine AS a\nARG A=1\nENV E=e\nFROM a\nRUN true\n"
    lowered = lower_all(text)
    run = runs(lowered[1][0])[0]
    assert run.created_by == "RUN |1 A=1 /bin/sh -c true # buildkit"
    assert ("E", "e") in run.env


# ---- RUN ----------------------------------------------------------------------------------------

def test_run_exec_form_and_shell() -> None:
    steps = steps_of('FROM alpine\nRUN ["echo", "a b"]\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\nRUN x | y\n')
    r1, r2 = runs(steps)
    assert r1.argv == ("echo", "a b") and not r1.shell_form
    assert r1.created_by == "RUN echo a b # buildkit"
    assert r2.argv == ("/bin/bash", "-eo", "pipefail", "-c", "x | y")
    assert by_kind(steps, "SHELL")[0].created_by == "SHELL [/bin/bash -eo pipefail -c]"


def test_run_is_not_expanded_but_user_and_workdir_apply() -> None:
    steps = steps_of("FROM alpine\nARG N=1\nUSER nobody\nWORKDIR /x\nRUN echo $N\n")
    run = runs(steps)[0]
    assert run.argv[-1] == "echo $N"
    assert run.user == "nobody" and run.workdir == "/x"
    assert run.network == "default" and run.security == "sandbox"


def test_run_heredoc_without_command_is_the_script() -> None:
    steps = steps_of("FROM alpine\nRUN <<EOF\necho $HOME\nEOF\n")
    run = runs(steps)[0]
    assert run.argv == ("/bin/sh", "-c", "echo $HOME\n")
    assert run.files == ()


def test_run_heredoc_with_shebang_becomes_a_file() -> None:
    steps = steps_of("FROM alpine\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n")
    run = runs(steps)[0]
    assert run.argv == ("/bin/sh", "-c", "/dev/pipes/EOF")
    assert run.files[0].path == "/dev/pipes/EOF"
    assert run.files[0].content == "#!/usr/bin/env python3\nprint(1)\n"
    assert run.files[0].mode == 0o755


def test_run_heredoc_with_command_is_reconstituted() -> None:
    steps = steps_of("FROM alpine\nRUN cat <<EOF > /f\nhello\nEOF\n")
    run = runs(steps)[0]
    assert run.argv == ("/bin/sh", "-c", "cat <<EOF > /f\nhello\nEOF")


def test_run_mounts_parsed_and_resolved() -> None:
    text = ("FROM alpine AS src\nFROM alpine\nWORKDIR /w\n"
            "RUN --mount=type=cache,target=cache,sharing=locked,mode=0700,uid=1 "
            "--mount=type=bind,from=src,source=/etc,target=/mnt/etc "
            "--mount=type=secret,id=tok --mount=type=ssh --mount=type=tmpfs,target=/t,size=64m "
            "--mount=type=bind,from=nginx:1,target=/n,rw true\n")
    run = runs(steps_of(text))[0]
    cache, bind, secret, ssh, tmpfs, img = run.mounts
    assert (cache.type, cache.target, cache.id, cache.sharing, cache.mode, cache.uid, cache.readonly) == \
        ("cache", "/w/cache", "/w/cache", "locked", 0o700, 1, False)
    assert (bind.from_stage, bind.from_image, bind.source, bind.target, bind.readonly) == (0, None, "/etc", "/mnt/etc", True)
    assert (secret.id, secret.target, secret.required) == ("tok", "/run/secrets/tok", False)
    assert (ssh.id, ssh.target) == ("default", "/run/buildkit/ssh_agent.0")
    assert (tmpfs.size, tmpfs.readonly) == (64 << 20, False)
    assert (img.from_stage, img.from_image, img.readonly) == (None, "nginx:1", False)


def test_mount_values_are_expanded() -> None:
    run = runs(steps_of("FROM alpine\nARG C=/root/.cache\nRUN --mount=type=cache,target=$C true\n"))[0]
    assert run.mounts[0].target == "/root/.cache"
    assert ("C", "/root/.cache") in run.used_args


@pytest.mark.parametrize("mount,message", [
    ("type=foo,target=/x", "unsupported mount type"),
    ("type=bind,target=/x,bogus=1", "unexpected key 'bogus'"),
    ("type=bind,target=/x,mode=0755", "mode not allowed"),
    ("type=cache,target=/x,sharing=maybe", "unsupported sharing value"),
    ("type=bind,target=/x,sharing=shared", "invalid cache sharing"),
    ("type=cache,target=/x,mode=999", "invalid value 999 for mode"),
    ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
    ("type=bind,target=/x,ro=maybe", "invalid value for ro"),
    ("type=bind,target=/x,required", "unexpected key 'required'"),
    ("type=secret", "one of source, target required"),
    ("type=secret,id=a,source=b", "both source and id"),
    ("type=secret,id=a,from=x", "should not have a from"),
    ("type=secret,id=a,sharing=locked", "should not define sharing"),
    ("type=bind,target=/", 'invalid mount target "/"'),
    ("type=bind,source=/x", "requires a target"),
    ("type=tmpfs,target=/t,size=lots", "invalid value for size"),
    ("type=bind,target", "must be a key=value pair"),
])
def test_mount_errors_at_instruction_span(mount: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message) as err:
        steps_of(f"FROM alpine\n\nRUN --mount={mount} true\n")
    assert err.value.span is not None and err.value.span.line == 3


def test_run_network_and_security() -> None:
    run = runs(steps_of("FROM alpine\nRUN --network=none --security=insecure true\n"))[0]
    assert (run.network, run.security) == ("none", "insecure")
    assert run.created_by == "RUN /bin/sh -c true # buildkit"


def test_secret_mount_as_env() -> None:
    run = runs(steps_of("FROM alpine\nRUN --mount=type=secret,id=tok,env=TOKEN,required true\n"))[0]
    assert (run.mounts[0].env, run.mounts[0].target, run.mounts[0].required) == ("TOKEN", "", True)


# ---- COPY / ADD ---------------------------------------------------------------------------------

def test_copy_dest_resolution_and_history() -> None:
    steps = steps_of("FROM alpine\nWORKDIR /app\nCOPY --chown=app:app --chmod=644 a b ./sub/\nCOPY c .\nADD d ../e\n")
    c1, c2, c3 = [s for s in steps if isinstance(s, CopyStep)]
    assert c1.dest == "/app/sub/" and c1.sources == ("a", "b")
    assert c1.created_by == "COPY --chown=app:app --chmod=644 a b ./sub/ # buildkit"
    assert c2.dest == "/app/"
    assert c3.dest == "/e" and c3.kind == "ADD"
    assert c3.created_by == "ADD d ../e # buildkit"


def test_copy_from_stage_and_flags() -> None:
    text = "FROM alpine AS b\nFROM scratch\nCOPY --from=B --link --exclude=*.md /src /dst/\n"
    copy = next(s for s in steps_of(text) if isinstance(s, CopyStep))
    assert (copy.from_stage, copy.from_image, copy.link, copy.excludes) == (0, None, True, ("*.md",))
    assert copy.created_by == "COPY /src /dst/ # buildkit"


def test_copy_heredoc_sources_expanded_unless_quoted() -> None:
    text = ("FROM alpine\nARG NAME=world\n"
            "COPY <<A <<'B' /out/\nhello \"$NAME\"\nA\nraw $NAME\nB\n")
    copy = next(s for s in steps_of(text) if isinstance(s, CopyStep))
    a, b = copy.sources
    assert isinstance(a, Heredoc) and a.content == 'hello "world"\n'
    assert isinstance(b, Heredoc) and b.content == "raw $NAME\n"
    assert copy.created_by == "COPY <<A <<B /out/ # buildkit"
    assert copy.used_args == (("NAME", "world"),)


@pytest.mark.parametrize("chmod", ["0755", "755", "u+x", "u=rwx,go=rx"])
def test_chmod_valid(chmod: str) -> None:
    copy = next(s for s in steps_of(f"FROM alpine\nCOPY --chmod={chmod} a /b\n") if isinstance(s, CopyStep))
    assert copy.chmod == chmod
    assert copy.chmod_mode == (int(chmod, 8) if chmod.isdigit() else None)


@pytest.mark.parametrize("chmod,message", [("9", "octal"), ("17777", "octal"), ("u+q", "invalid chmod")])
def test_chmod_invalid(chmod: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        steps_of(f"FROM alpine\nCOPY --chmod={chmod} a /b\n")


def test_copy_url_rejected_add_url_allowed() -> None:
    with pytest.raises(DockerfileError, match="URL for COPY"):
        steps_of("FROM alpine\nCOPY https://example.com/x /x\n")
    add = next(s for s in steps_of("FROM alpine\nADD --checksum=sha256:abc https://example.com/x /x\n")
               if isinstance(s, CopyStep))
    assert add.checksum == "sha256:abc"


# ---- config instructions ------------------------------------------------------------------------

def test_expose_ranges_and_protocols() -> None:
    steps = steps_of("FROM alpine\nARG P=53/UDP\nEXPOSE 80 9000-9001 $P\nEXPOSE 443/tcp\n")
    e1, e2 = by_kind(steps, "EXPOSE")
    assert e1.created_by == "EXPOSE [80/tcp 9000/tcp 9001/tcp 53/udp]"
    assert e1.used_args == (("P", "53/UDP"),)
    assert e2.state.exposed_ports == ("443/tcp", "53/udp", "80/tcp", "9000/tcp", "9001/tcp")
    assert list(e2.state.to_config()["ExposedPorts"]) == ["443/tcp", "53/udp", "80/tcp", "9000/tcp", "9001/tcp"]


@pytest.mark.parametrize("spec,message", [("80/http", "invalid proto: http"), ("x", "invalid containerPort"),
                                         ("90-80", "invalid containerPort"), ("70000", "invalid containerPort")])
def test_expose_invalid_after_expansion(spec: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message) as err:
        steps_of(f"FROM alpine\nARG P={spec}\nEXPOSE $P\n")
    assert err.value.span is not None and err.value.span.line == 3


def test_entrypoint_resets_inherited_cmd() -> None:
    base = {"Cmd": ["nginx"], "Entrypoint": ["/docker-entrypoint.sh"]}
    st = final_state("FROM nginx\nENTRYPOINT [\"/x\"]\n", base_configs={0: base})
    assert st.entrypoint == ("/x",) and st.cmd is None
    st = final_state("FROM nginx\nCMD [\"a\"]\nENTRYPOINT [\"/x\"]\n", base_configs={0: base})
    assert st.cmd == ("a",)
    st = final_state("FROM nginx\nLABEL a=b\n", base_configs={0: base})
    assert st.cmd == ("nginx",)


def test_cmd_entrypoint_history_and_args_escaped() -> None:
    steps = steps_of('FROM alpine\nCMD echo "hi"\nENTRYPOINT ["/bin/tini", "--"]\n')
    cmd, = by_kind(steps, "CMD")
    assert cmd.created_by == 'CMD ["/bin/sh" "-c" "echo \\"hi\\""]'
    assert cmd.state.args_escaped and cmd.state.to_config()["ArgsEscaped"] is True
    assert by_kind(steps, "ENTRYPOINT")[0].created_by == 'ENTRYPOINT ["/bin/tini" "--"]'


def test_workdir_relative_chaining() -> None:
    steps = steps_of("FROM alpine\nWORKDIR a\nWORKDIR b/../c\nWORKDIR /abs//x/\nWORKDIR /\n")
    wds = by_kind(steps, "WORKDIR")
    assert [w.state.working_dir for w in wds] == ["/a", "/a/c", "/abs/x", "/"]
    assert [w.created_by for w in wds] == ["WORKDIR /a", "WORKDIR /a/c", "WORKDIR /abs/x", "WORKDIR /"]
    assert [w.workdir_to_create for w in wds] == ["/a", "/a/c", "/abs/x", None]
    assert wds[0].makes_layer and not wds[3].makes_layer


def test_workdir_relative_to_base_image_workdir() -> None:
    st = final_state("FROM x\nWORKDIR sub\n", base_configs={0: {"WorkingDir": "/srv"}})
    assert st.working_dir == "/srv/sub"


def test_config_history_strings() -> None:
    text = ("FROM alpine\nMAINTAINER Jane <j@x>\nUSER app:app\nVOLUME /data /logs\nVOLUME [\"/x\"]\n"
            "STOPSIGNAL SIGQUIT\nLABEL \"a b\"=\"c d\" e=f\n"
            "HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://x/\nHEALTHCHECK NONE\n")
    steps = steps_of(text)
    got = [s.created_by for s in steps]
    assert got == [
        "MAINTAINER Jane <j@x>",
        "USER app:app",
        "VOLUME [/data /logs]",
        "VOLUME [/x]",
        "STOPSIGNAL SIGQUIT",
        "LABEL a b=c d e=f",
        'HEALTHCHECK &{["CMD-SHELL" "curl -f http://x/"] "1m30s" "0s" "0s" "0s" \'\\x03\'}',
        'HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" \'\\x00\'}',
    ]
    assert all(not s.makes_layer for s in steps)
    st = steps[-1].state
    assert st.author == "Jane <j@x>"
    cfg = st.to_config()
    assert cfg["User"] == "app:app"
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}, "/x": {}}
    assert cfg["Labels"] == {"a b": "c d", "e": "f"}
    assert cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Healthcheck"] == {"Test": ["NONE"]}


def test_stopsignal_invalid() -> None:
    with pytest.raises(DockerfileError, match="Invalid signal: SIGNOPE"):
        steps_of("FROM alpine\nSTOPSIGNAL SIGNOPE\n")


def test_onbuild_appends_without_history() -> None:
    steps = steps_of("FROM alpine\nONBUILD RUN echo one\nONBUILD COPY . /app\n")
    ob = by_kind(steps, "ONBUILD")
    assert [s.records_history for s in ob] == [False, False]
    assert ob[-1].state.onbuild == ("RUN echo one", "COPY . /app")
    assert ob[-1].state.to_config()["OnBuild"] == ["RUN echo one", "COPY . /app"]


def test_onbuild_triggers_run_after_from_and_are_cleared() -> None:
    base = {"OnBuild": ["ENV FROM_TRIGGER=1", "WORKDIR /trig"]}
    assert onbuild_triggers(base) == ["ENV FROM_TRIGGER=1", "WORKDIR /trig"]
    assert onbuild_triggers(None) == []
    text = "FROM base\nRUN true\n"
    graph = graph_of(text)
    low = StageLowering(graph.stages[0], graph, base, {})
    triggers = [ins for t in onbuild_triggers(base) for ins in to_instructions(parse_text(t))]
    steps = list(low.steps(triggers))
    assert [s.created_by for s in steps[:2]] == ["ENV FROM_TRIGGER=1", "WORKDIR /trig"]
    assert runs(steps)[0].workdir == "/trig"
    assert low.state.onbuild == ()


def test_onbuild_trigger_error_reported_at_from() -> None:
    graph = graph_of("FROM base\n\nRUN true\n")
    low = StageLowering(graph.stages[0], graph, None, {})
    bad = to_instructions(parse_text("COPY --chmod=99 a b"))
    with pytest.raises(DockerfileError, match="ONBUILD") as err:
        list(low.steps(bad))
    assert err.value.span == graph.stages[0].from_instr.node.span


def test_expansion_error_carries_span() -> None:
    with pytest.raises(ExpansionError) as err:
        steps_of("FROM alpine\n\nENV A=${B?unset}\n")
    assert err.value.span is not None and err.value.span.line == 3


def test_to_config_of_a_full_stage() -> None:
    text = ('FROM alpine\nENV A=1\nLABEL v=2\nEXPOSE 80\nWORKDIR /app\nUSER app\n'
            'ENTRYPOINT ["/e"]\nCMD ["c"]\n')
    cfg = final_state(text, base_configs={0: {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]}}).to_config()
    assert cfg == {"User": "app", "ExposedPorts": {"80/tcp": {}}, "Env": ["PATH=/usr/bin", "A=1"],
                   "Entrypoint": ["/e"], "Cmd": ["c"], "WorkingDir": "/app", "Labels": {"v": "2"},
                   "ArgsEscaped": True}


# ---- hand-built instructions (independent of the parser) ----------------------------------------

def test_lowering_typed_instructions_directly() -> None:
    from builder.plan.graph import build_graph

    instrs = [
        From(Node("FROM", ("alpine",), Span(1)), "alpine"),
        KeyValues(Node("ENV", ("A", "1", "="), Span(2)), "ENV", (("A", "1"),)),
        Single(Node("WORKDIR", ("/x",), Span(3)), "WORKDIR", "/x"),
        Command(Node("RUN", ("echo $A",), Span(4)), "RUN", ("echo $A",), False),
    ]
    graph = build_graph(instrs, build_args={}, target=None, platform=AMD64, build_platform=AMD64)
    low = StageLowering(graph.stages[0], graph, None, {})
    env, wd, run = list(low.steps())
    assert env.created_by == "ENV A=1"
    assert wd.state.working_dir == "/x"
    assert run.argv == ("/bin/sh", "-c", "echo $A") and run.workdir == "/x"


def test_helpers() -> None:
    assert normalize_workdir("", "a") == "/a"
    assert normalize_workdir("/a", "../../b/") == "/b"
    assert resolve_dest("/w", ".") == "/w/"
    assert resolve_dest("/w", "x/.") == "/w/x/"
    assert resolve_dest("/", "/abs") == "/abs"
    text, used = run_command_string(["/bin/sh", "-c", "x"], [("A", "1"), ("B", None), ("A", "2")], {"A": "3"})
    assert text == "|2 A=3 B= /bin/sh -c x"
    assert used == (("A", "3"), ("B", ""))
    assert ImageConfigState.from_config(None).effective_shell == ("/bin/sh", "-c")
    assert StageRef(1).index == 1


# ---- robustness: bad input only ever raises DockerfileError -------------------------------------

from hypothesis import given, settings, strategies as hs  # noqa: E402

from builder.plan.mounts import parse_mount  # noqa: E402

_MOUNT_ALPHABET = hs.sampled_from(list("type=bindcachesecrettmpfsshfromtargetsrcid,modeuid0789\"'/ $-+"))


@settings(max_examples=150, deadline=None)
@given(hs.text(_MOUNT_ALPHABET, max_size=60))
def test_parse_mount_never_raises_raw(value: str) -> None:
    try:
        spec = parse_mount(value, expand=lambda w: w, workdir="/w", span=Span(1))
    except DockerfileError:
        return
    assert spec.type in ("bind", "cache", "tmpfs", "secret", "ssh")
    assert spec.target == "" or spec.target.startswith("/")


_EXPOSE_GRAPH = graph_of("FROM alpine\nARG P\nEXPOSE $P\n")


@settings(max_examples=150, deadline=None)
@given(hs.text(hs.sampled_from(list("0123456789-/:tcpudxsY[]. ")), min_size=1, max_size=20))
def test_expose_never_raises_raw(spec: str) -> None:
    graph = _EXPOSE_GRAPH
    low = StageLowering(graph.stages[0], graph, None, {"P": spec})
    try:
        steps = list(low.steps())
    except DockerfileError:
        return
    for port in steps[-1].state.exposed_ports:
        number, _, proto = port.partition("/")
        assert 0 <= int(number) <= 65535 and proto in ("tcp", "udp", "sctp")
