from __future__ import annotations

import os
from pathlib import Path

import pytest

from digest.config import load_config
from digest.errors import ConfigError, ProfileError
from digest.profile_files import load_profiles
from digest.profiles import load_profile
from tests.conftest import ADA, BOB, ROOT, write_profile


def test_no_config_file_means_embedded_defaults_only_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"no digest\.toml"):
        load_config()
    cfg = load_config(missing_ok=True)
    assert cfg.path is None
    assert cfg.database_url == f"sqlite:///{tmp_path / 'data' / 'digest.db'}"
    assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.security) == ("localhost", 8025, "none")


def test_the_config_is_found_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('data_dir = "state"\n[smtp]\nport = 2525\n')
    monkeypatch.setenv("DIGEST_CONFIG", str(path))
    cfg = load_config()
    assert cfg.smtp.port == 2525
    assert cfg.data_dir == tmp_path / "state"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[smtp]\nsecurity = "ssl"\n',
            "smtp.security: Input should be 'starttls', 'tls' or 'none'",
        ),
        ("[smtp]\nport = 0\n", "smtp.port:"),
        (
            '[smtp]\nhots = "x"\n',
            "smtp.hots: unknown key, did you mean 'host'? (allowed: host, port",
        ),
        ('[[sources]]\nname = "a"\nkind = "atom"\nurl = "https://x"\n', "sources[0].kind:"),
        (
            '[[sources]]\nname = "a"\nkind = "rss"\nurl = "ftp://x"\n',
            "sources[0].url: must start with https://",
        ),
        ("[database\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_secrets_come_from_the_environment_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "digest.toml"
    path.write_text('[smtp]\nusername = "u"\npassword_env = "TEST_SMTP_PW"\n')
    cfg = load_config(path)
    with pytest.raises(ConfigError, match="TEST_SMTP_PW is not set"):
        cfg.smtp.password()
    monkeypatch.setenv("TEST_SMTP_PW", "hunter2")
    secret = cfg.smtp.password()
    assert secret is not None and secret.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(secret) and "hunter2" not in repr(cfg)


def test_the_shipped_example_profile_is_valid() -> None:
    profile = load_profile(ROOT / "subscribers" / "example.toml")
    assert profile.email == "ada@example.org"
    assert profile.interests.papers


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("colour = 'blue'\n" + ADA, "colour", "unknown key (allowed: email, name"),
        (ADA.replace("Europe/London", "Mars/Olympus"), "timezone", "unknown time zone"),
        (ADA.replace('"07:00"', '"7am"'), "send_at", "HH:MM"),
        (
            ADA.replace("max_papers = 8", "max_papers = 500"),
            "max_papers",
            "less than or equal to 50",
        ),
        (ADA.replace('"ada@example.org"', '"ada at example"'), "email", "plain address"),
        (ADA + "[interests.extra]\n", "interests.extra", "unknown key"),
        (ADA.replace('"2609.04411"', '"not-an-id"'), "interests.papers", "not an arXiv id"),
        (ADA.replace('name = "Ada"', 'name = "Ada\\r\\nBcc: x@y"'), "name", "control characters"),
        # Blank or punctuation-only words would match (or, under `exclude`, drop) every paper.
        (ADA.replace('"long context"', '" . "'), "interests.keywords", "no letter or digit"),
        (ADA + 'exclude = ["  "]\n', "interests.exclude", "no letter or digit"),
    ],
)
def test_profile_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write_profile(tmp_path, "ada", text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.key == key
    assert str(err.value).startswith(f"{path}: {key}: ")
    assert problem in str(err.value)


def test_a_broken_profile_does_not_hide_the_others(tmp_path: Path) -> None:
    write_profile(tmp_path, "ada", ADA.replace("Europe/London", "Nowhere/Land"))
    write_profile(tmp_path, "bob", BOB)
    write_profile(tmp_path, "bob-again", BOB)
    loaded = load_profiles(tmp_path)
    assert [p.email for p in loaded.profiles] == ["bob@example.org"]
    assert sorted(e.key for e in loaded.errors) == ["email", "timezone"]


@pytest.mark.parametrize("ends", ["\r\n", "\r", "\n"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_profile_saved_with_any_line_ends_or_a_byte_order_mark_loads_the_same(
    tmp_path: Path, ends: str, bom: bytes
) -> None:
    """As Windows editors save it: CRLF, and a byte-order mark first (Notepad's "UTF-8 with
    BOM"), which TOML itself would refuse at line 1, column 1."""
    path = tmp_path / "ada.toml"
    path.write_bytes(bom + ADA.replace("\n", ends).encode())
    assert (
        load_profile(path).model_dump()
        == load_profile(write_profile(tmp_path, "b", ADA)).model_dump()
    )


def test_a_profile_that_is_not_utf8_is_one_clear_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ada.toml"
    path.write_bytes(ADA.encode().replace(b"Ada", b"Ad\xe9"))  # Latin-1, as an old editor saves
    line = ADA[: ADA.index("Ada")].count("\n") + 1
    for bom in (b"", b"\xef\xbb\xbf"):  # the decoder's offsets start after a BOM
        path.write_bytes(bom + ADA.encode().replace(b"Ada", b"Ad\xe9"))
        with pytest.raises(ProfileError) as err:
            load_profile(path)
        assert str(err.value) == f"{path}: line {line} is not UTF-8 text: save the file as UTF-8"


def test_every_mistake_of_a_profile_is_in_its_one_error_line(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        "r",
        'email = "r@example.org"\nmax_paper = 5\ntimezone = "Mars/Olympus"\nsend_at = "25:00"\n'
        '[interests]\nkeywrds = ["x"]\n',
    )
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}: ")
    for key in ("max_paper", "timezone", "send_at", "interests.keywrds"):
        assert key in line, key
    assert "did you mean 'max_papers'?" in line and "did you mean 'keywords'?" in line


def test_a_profile_naming_an_unknown_source_is_an_error(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path, "bob", 'email = "bob@example.org"\nsources = ["arxiv", "nope"]\n'
    )
    with pytest.raises(ProfileError, match=r"sources\[1\]: no source named 'nope'"):
        load_profile(path, ["arxiv"])


def test_example_paper_ids_are_normalised(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        "a",
        'email = "a@b.org"\n[interests]\npapers = ["arXiv:2401.00001v3", "hep-th/9901001"]\n',
    )
    assert load_profile(path).interests.papers == ["2401.00001", "hep-th/9901001"]


def test_unchanged_profiles_come_from_the_cache_and_a_changed_one_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.profile_files as profiles_module
    from digest.profile_files import load_profiles

    parsed: list[str] = []
    real = profiles_module.load_profile

    def counted(path: Path, known: object = None) -> object:
        parsed.append(path.name)
        return real(path, known)  # type: ignore[arg-type]

    monkeypatch.setattr(profiles_module, "load_profile", counted)
    subs, cache = tmp_path / "subscribers", tmp_path / "data" / "profiles.pkl"
    subs.mkdir()
    for name in ("ann", "ben"):
        (subs / f"{name}.toml").write_text(f'email = "{name}@example.org"\nmax_papers = 5\n')
    (subs / "bad.toml").write_text('email = "bad@example.org"\nfavourite = 1\n')
    first = load_profiles(subs, cache=cache)
    assert [p.email for p in first.profiles] == ["ann@example.org", "ben@example.org"]
    assert len(first.errors) == 1 and oct(cache.stat().st_mode)[-3:] == "600"
    parsed.clear()
    again = load_profiles(subs, cache=cache)
    assert parsed == ["bad.toml"]  # a broken file is read every time; the others not
    assert again.profiles[0].path == subs / "ann.toml" and len(again.errors) == 1
    # Rewritten at the same size with its modification time put back: still noticed.
    ann = subs / "ann.toml"
    st = ann.stat()
    ann.write_text('email = "ann@example.org"\nmax_papers = 7\n')
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns))
    (subs / "ben.toml").unlink()
    third = load_profiles(subs, cache=cache)
    assert [(p.email, p.max_papers) for p in third.profiles] == [("ann@example.org", 7)]
    # Other sources configured (they change what is valid): the cache is not used.
    parsed.clear()
    load_profiles(subs, ["arxiv"], cache=cache)
    assert sorted(parsed) == ["ann.toml", "bad.toml"]
    # A damaged cache is ignored, not an error.
    cache.write_bytes(b"\x80\x05garbage")
    assert [p.max_papers for p in load_profiles(subs, cache=cache).profiles] == [7]


def test_schedules_come_from_the_index_and_changed_files_are_read_again(tmp_path: Path) -> None:
    from digest.profile_files import index_file, load_schedules

    subs, cache = tmp_path / "subscribers", tmp_path / "data" / "profiles.pkl"
    for i in range(5):
        write_profile(
            subs, f"r{i}", f'email = "r{i}@example.org"\nsend_at = "0{i}:30"\n'
            'timezone = "Europe/Paris"\n[interests]\nkeywords = ["x"]\n',
        )  # fmt: skip
    load_profiles(subs, cache=cache)
    assert index_file(cache).exists() and index_file(cache).stat().st_mode & 0o777 == 0o600
    # After the load: one file edited, one broken, one copying another's address, one new.
    write_profile(subs, "r1", 'email = "r1@example.org"\nsend_at = "23:05"\n')
    write_profile(subs, "r2", 'email = "r2@example.org"\nsend_at = "25:00"\n')
    write_profile(subs, "r5", 'email = "R0@example.org"\n')
    write_profile(subs, "r6", 'email = "r6@example.org"\ntimezone = "Asia/Tokyo"\n')
    got, broken = load_schedules(subs, cache=cache)
    loaded = load_profiles(subs)  # what a full read of the files says
    assert [(s.email, s.timezone, s.send_at) for s in got] == [
        (p.email, p.timezone, p.send_at) for p in loaded.profiles
    ]
    assert broken == len(loaded.errors) == 2
    assert ("r1@example.org", "23:05") in [(s.email, s.send_at) for s in got]


def test_schedules_without_an_index_are_read_in_full_once_and_indexed(tmp_path: Path) -> None:
    from digest.profile_files import index_file, load_schedules

    subs, cache = tmp_path / "subscribers", tmp_path / "data" / "profiles.pkl"
    write_profile(subs, "ada", ADA)
    got, broken = load_schedules(subs, cache=cache)
    assert [s.email for s in got] == ["ada@example.org"] and broken == 0
    assert index_file(cache).exists()  # the next status reads the index


def test_profiles_over_several_packed_chunks_load_as_the_files_say_after_every_change(
    tmp_path: Path,
) -> None:
    from digest.packed import CHUNK

    subs, cache = tmp_path / "subscribers", tmp_path / "data" / "profiles.pkl"
    n = 2 * CHUNK + 40
    for i in range(n):
        write_profile(
            subs, f"r{i:04d}", f'email = "r{i}@example.org"\nmax_papers = {1 + i % 50}\n'
            f'[interests]\nkeywords = ["topic {i}", "Günther\'s \\"lemma\\""]\n'
            f'papers = ["2401.{i % 7:05d}", "2402.{i % 300:05d}"]\n',
        )  # fmt: skip

    def same_as_the_files() -> None:
        cached, fresh = load_profiles(subs, cache=cache), load_profiles(subs)
        assert cached.profiles.emails == [p.email for p in fresh.profiles]
        assert [(p.model_dump(), p.path) for p in cached.profiles] == [
            (p.model_dump(), p.path) for p in fresh.profiles
        ]
        assert [str(e) for e in cached.errors] == [str(e) for e in fresh.errors]
        assert (
            cached.example_papers
            == fresh.example_papers
            == list(dict.fromkeys(i for p in fresh.profiles for i in p.interests.papers))
        )
        # Views: a slice and a slot's subset unpack the same profiles as the whole.
        part = cached.profiles[CHUNK - 3 : CHUNK + 3]
        assert [p.email for p in part] == cached.profiles.emails[CHUNK - 3 : CHUNK + 3]
        wanted = {"r5@example.org", f"r{n - 1}@example.org"}
        assert {p.email for p in cached.profiles.only(wanted)} & wanted == set(
            cached.profiles.emails
        ) & wanted

    same_as_the_files()  # written
    first = cache.read_bytes()
    same_as_the_files()  # read back: nothing changed, the chunks are used as they are
    assert cache.read_bytes() == first
    # In the middle of the second chunk: one edited, one broken, one removed, one copying an
    # address; and a new file sorted before all.
    write_profile(
        subs, f"r{CHUNK + 5:04d}", f'email = "r{CHUNK + 5}@example.org"\nmax_papers = 49\n'
    )
    write_profile(subs, f"r{CHUNK + 6:04d}", 'email = "broken"\n')
    (subs / f"r{CHUNK + 7:04d}.toml").unlink()
    write_profile(subs, f"r{CHUNK + 8:04d}", 'email = "R3@example.org"\n')
    write_profile(subs, "a-first", 'email = "first@example.org"\n')
    same_as_the_files()
    assert load_profiles(subs, cache=cache).profiles[1 + CHUNK + 5].max_papers == 49


def test_a_followed_author_pasted_from_arxiv_into_double_quotes_keeps_its_umlaut(
    tmp_path: Path,
) -> None:
    """arXiv writes `G\\"unther`; inside a double-quoted TOML string the backslash is TOML's
    own escape and the file reads `G"unther`. The name still matches Günther's papers, and the
    reason names him as a person writes it."""
    from digest.rank.match import FollowedAuthors

    path = tmp_path / "r.toml"
    path.write_text(
        'email = "r@example.org"\n[interests]\n'
        + r"""authors = ["Martin G\"unther", "G\"{u}nther, M.", "Jos\\'e Garc\\'ia"]"""
        + "\n",
        encoding="utf-8",
    )
    authors = load_profile(path).interests.authors
    assert authors[:2] == ['Martin G\\"unther', 'G\\"{u}nther, M.']
    followed = FollowedAuthors(authors)
    assert followed.hits(["Martin Günther"]) == ["Martin Günther", "Günther, M."]
    assert followed.hits(["José García"]) == ["José García"]  # shown without its TeX
    assert followed.hits(["Martin Gunther Smith"]) == []


def test_a_new_file_with_a_readers_address_does_not_take_their_digest_from_the_old_one(
    tmp_path: Path,
) -> None:
    """A copy saved as `a-copy.toml` sorts before `ada.toml`: with the last load's cache, the
    file the address came from keeps it and the newcomer is the error; with no cache, the
    first file in name order keeps it, as before."""
    subs, cache = tmp_path / "subscribers", tmp_path / "data" / "profiles.pkl"
    cache.parent.mkdir()
    write_profile(subs, "ada", ADA)
    write_profile(subs, "bob", BOB)
    assert not load_profiles(subs, cache=cache).errors
    write_profile(subs, "a-copy", 'email = "ADA@example.org"\n[interests]\nkeywords = ["x"]\n')
    loaded = load_profiles(subs, cache=cache)
    assert [p.name for p in loaded.profiles] == ["Ada", "Bob"]
    [err] = loaded.errors
    assert err.path.endswith("a-copy.toml") and err.key == "email"
    assert str(err).endswith(f"email: the same address as {subs / 'ada.toml'}")
    fresh = load_profiles(subs)  # no cache: name order decides
    assert [e.path.rsplit("/", 1)[-1] for e in fresh.errors] == ["ada.toml"]
