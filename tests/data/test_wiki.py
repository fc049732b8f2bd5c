"""MediaWiki XML dumps to clean article text: a hand-written dump, damaged files, the real sample."""

from __future__ import annotations

import bz2

import pytest
from shared_data import require_shared

from bertkit.data.wiki import Article, clean_wikitext, iter_articles, write_articles
from bertkit.errors import BertkitError

LION = """{{Infobox animal|name=Lion|image=Lion.jpg}}
'''Lion''' (''Panthera leo'') is a large [[cat|felid]] of the genus [[Panthera]]&lt;ref&gt;Smith {{cite|2001}}, p. 4.&lt;/ref&gt;. It weighs {{convert|190|kg}}.&lt;ref name="w"/&gt;
[[File:Lion.jpg|thumb|A [[lion]] resting]]
__NOTOC__
== Behaviour ==
&lt;!-- a comment --&gt;Lions are social &amp;amp; live in [[pride (lion)|prides]]. See the [http://example.org official page] or http://example.org.
* Cubs stay with the pride.
* Adults hunt.
{| class="wikitable"
! Name !! Weight
|-
| Lion || 190
|}
Both sexes roar.
Males have manes.

'''See also'''
[[Category:Felids]]
[[de:Löwe]]"""

DUMP = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo><sitename>Test</sitename><namespaces><namespace key="0" /></namespaces></siteinfo>
  <page><title>Old lion</title><ns>0</ns><id>1</id><redirect title="Lion" />
    <revision><id>10</id><text xml:space="preserve">#REDIRECT [[Lion]]</text></revision></page>
  <page><title>Talk:Lion</title><ns>1</ns><id>2</id>
    <revision><id>11</id><text xml:space="preserve">Talk text that must not appear.</text></revision></page>
  <page><title>Lion &amp; co</title><ns>0</ns><id>3</id>
    <revision><id>12</id><text xml:space="preserve">An old revision.</text></revision>
    <revision><id>13</id><text xml:space="preserve">{LION}</text></revision></page>
  <page><title>Lists</title><ns>0</ns><id>4</id>
    <revision><id>14</id><text xml:space="preserve">* only [[a]]
* list</text></revision></page>
  <page><title>Tiger</title><ns>0</ns><id>5</id>
    <revision><id>15</id><text xml:space="preserve">The '''tiger''' is the largest cat.</text></revision></page>
</mediawiki>
"""

LION_TEXT = (
    "Lion (Panthera leo) is a large felid of the genus Panthera. It weighs 190 kg.\n"
    "Lions are social & live in prides. See the official page or.\n"
    "Both sexes roar. Males have manes."
)


@pytest.fixture
def dump(tmp_path):
    path = tmp_path / "dump.xml"
    path.write_text(DUMP, encoding="utf-8")
    return path


def test_iter_articles_cleans_and_skips(dump):
    articles = list(iter_articles(dump))
    assert articles == [Article("Lion & co", 3, LION_TEXT), Article("Tiger", 5, "The tiger is the largest cat.")]


def test_bz2_dump_and_write_articles(dump, tmp_path):
    packed = tmp_path / "dump.xml.bz2"
    packed.write_bytes(bz2.compress(dump.read_bytes()))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "articles-00007.txt").write_text("stale, from a longer run\n")
    stats = write_articles(packed, out, per_file=1)
    assert (stats.pages, stats.other_namespace, stats.redirects, stats.empty, stats.articles) == (5, 1, 1, 1, 2)
    assert (stats.files, stats.paragraphs) == (2, 4)
    assert stats.text_bytes == len(LION_TEXT.encode()) + len("The tiger is the largest cat.")
    assert sorted(p.name for p in out.iterdir()) == ["articles-00000.txt", "articles-00001.txt"]
    assert (out / "articles-00000.txt").read_text() == f'<doc id="3" title="Lion &amp; co">\n{LION_TEXT}\n</doc>\n\n'
    assert (out / "articles-00001.txt").read_text().startswith('<doc id="5" title="Tiger">\nThe tiger')
    assert write_articles(packed, out, per_file=10, workers=2).files == 1
    assert [p.name for p in out.iterdir()] == ["articles-00000.txt"]


@pytest.mark.parametrize(
    ("wikitext", "paragraphs"),
    [
        ("See [[:Category:Cats]] and [[wikt:roar|roar]] or [[Felis#Range|its range]].", ["See Category:Cats and roar or its range."]),
        ("It is {{convert|3|to|5|m}} long, {{frac|1|2}} of it {{lang|fr|très}} {{nowrap|old}}.", ["It is 3 to 5 m long, 1/2 of it très old."]),
        ("Cats{{citation needed}} (; {{IPA|x}}) purr &mdash; loudly&nbsp;.", ["Cats purr — loudly."]),
        ("A <math>x^2</math> term.<gallery>a.jpg|b</gallery>\n: indented\n;Term\nNext <b>bold</b> line.", ["A term.", "Next bold line."]),
        ("Notes\n\nA caption without a full stop\n\nThis paragraph has ten words but no full stop at the end", ["This paragraph has ten words but no full stop at the end"]),
        ("{{Infobox\n|a=1\n}}\n<references/>\n[[Image:x.png|frame|Caption.]]", []),
    ],
)
def test_clean_wikitext(wikitext, paragraphs):
    assert clean_wikitext(wikitext) == paragraphs


def test_damaged_inputs(dump, tmp_path):
    cases = {
        "plain.txt": (b"hello world\n", "not an XML file"),
        "page.xml": (b"<html><body/></html>", r"not a MediaWiki XML dump \(its root element is <html>\)"),
        "cut.xml": (dump.read_bytes()[:900], "malformed or truncated XML"),
        "cut.xml.bz2": (bz2.compress(dump.read_bytes())[:-30], "truncated compressed file"),
        "fake.xml.bz2": (dump.read_bytes(), "not a bz2 file"),
        "empty.xml": (b"", "not an XML file"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(BertkitError, match=rf"^{tmp_path}/{name}: {message}"):
            list(iter_articles(path))
    with pytest.raises(BertkitError, match="missing.xml: cannot read: No such file or directory"):
        list(iter_articles(tmp_path / "missing.xml"))
    with pytest.raises(BertkitError, match=r"plain\.txt: exists and is not a directory"):
        write_articles(dump, tmp_path / "plain.txt")
    with pytest.raises(BertkitError, match="per_file must be at least 1"):
        write_articles(dump, tmp_path / "out", per_file=0)
    out = tmp_path / "out"
    with pytest.raises(BertkitError):
        write_articles(tmp_path / "cut.xml", out)
    assert not out.exists() or not any(out.iterdir())  # no file that looks complete


@pytest.mark.shared
def test_real_wikipedia_sample(tmp_path):
    dump = require_shared("corpus", "wikipedia", "enwiki-sample-pages-articles.xml.bz2")
    stats = write_articles(dump, tmp_path)
    # README: 206 pages, 205 in ns 0 and 1 in ns 4, 100 redirects (the ns 4 page is one of them)
    assert (stats.pages, stats.other_namespace, stats.redirects) == (206, 1, 99)
    assert stats.articles + stats.empty == 106 and stats.articles >= 100 and stats.files == 1
    text = (tmp_path / "articles-00000.txt").read_text(encoding="utf-8")
    assert text.count("<doc id=") == stats.articles == text.count("</doc>\n\n")
    for marker in ("{{", "}}", "[[", "]]", "<ref", "''", "&amp;", "&lt;", "__NOTOC__", "thumb|", "Category:"):
        assert marker not in text, marker
    assert '<doc id="12" title="Anarchism">\nAnarchism is a political philosophy that advocates self-governed' in text
