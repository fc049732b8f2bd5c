"""A MediaWiki XML dump (``.xml.bz2``, ``.xml.gz`` or plain ``.xml``) to clean article text.

The dump is streamed with ``xml.etree.ElementTree.iterparse``, each ``<page>`` cleared once read,
so memory stays bounded whatever the dump's size. Pages outside the article namespace (ns != 0:
talk, user, template, ... pages) and redirects are skipped and counted.

Wikitext is parsed with ``mwparserfromhell`` and rendered to plain text:

* kept: prose, the visible text of links (``[[target|text]]`` gives "text"), titled external links,
  bold/italic text, HTML entities (unescaped), and the text of a few inline templates that stand
  for words in a sentence (``{{convert|5|km}}`` gives "5 km", ``{{lang|fr|mot}}`` gives "mot", dashes,
  fractions, ``{{nowrap|...}}``);
* removed: every other template, tables, ``<ref>`` references, comments, file/image/media links,
  category links, interlanguage links, bare URLs, magic words (``__NOTOC__``), math, galleries,
  code blocks and other non-prose tags, and stray HTML tags;
* headings are dropped, and so are list lines (``*``, ``#``, ``;``, ``:``) and table debris: as in
  Google's BERT data, which kept only text passages and ignored lists, tables and headers. A dropped
  line ends the paragraph around it. Paragraphs that are not prose are dropped too: those that do
  not end like a sentence and have fewer than 10 words (bold pseudo-headings such as "Notes",
  captions, a "Then," left before a removed formula).

The text of an article is its paragraphs, one per line (consecutive wikitext lines that MediaWiki
would run together are joined with a space).

Article files (``write_articles``): UTF-8 files named ``articles-00000.txt``, ``articles-00001.txt``,
..., each holding up to ``per_file`` articles in WikiExtractor's layout (which NVIDIA's BERT
pipeline also reads; here without its url attribute and without the title as a first line)::

    <doc id="12" title="Anarchism">
    First paragraph, on one line.
    Second paragraph.
    </doc>

with a blank line after each ``</doc>``. ``bertkit.data.sentences`` recognises these files by their
first line (``<doc ``) and takes each ``<doc>`` as one document.

Wikitext parsing is the slow part (mwparserfromhell runs at about 1-2 MB/s of wikitext), so
``workers`` > 1 cleans pages in worker processes; the output is the same for any number of workers.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import html
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import mwparserfromhell
from mwparserfromhell.nodes import (
    ExternalLink,
    Heading,
    HTMLEntity,
    Node,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

from bertkit.data.workers import ordered_map
from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_open

__all__ = ["Article", "WikiStats", "clean_wikitext", "iter_articles", "write_articles"]


@dataclass(frozen=True)
class Article:
    """One cleaned article: ``text`` is its paragraphs, one per line, joined with "\\n"."""

    title: str
    id: int
    text: str


@dataclass
class WikiStats:
    """Counts from one pass over a dump. Every page is counted in exactly one of the last four."""

    pages: int = 0  # <page> elements read
    other_namespace: int = 0  # skipped: ns != 0 (talk, user, template, ... pages)
    redirects: int = 0  # skipped: redirect pages in the article namespace
    empty: int = 0  # skipped: no text left after cleaning (e.g. list-only or disambiguation pages)
    articles: int = 0  # articles with text (written, by write_articles)
    paragraphs: int = 0  # paragraphs in those articles
    text_bytes: int = 0  # UTF-8 bytes of their text
    files: int = 0  # article files written


# ----------------------------------------------------------------------------------------------
# Wikitext to text.

_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
# <ref> elements never nest, so they go before parsing: a third of a typical article's wikitext.
_REF = re.compile(r"<ref(?:\s[^>]*?)?/>|<ref(?:\s[^>]*)?>.*?</ref\s*>", re.S | re.I)
_DROP_TAGS = frozenset(
    "ref references table gallery math chem ce timeline score syntaxhighlight source pre imagemap "
    "mapframe maplink graph templatedata hiero categorytree inputbox poem includeonly".split()
)
_LIST_MARK = "\x00"  # stands for a list-item marker while rendering; its line is dropped
_DROP_LINKS = frozenset({"file", "image", "media", "category"})
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)*$|^simple$")
# Bold/italic markup, left in the text by skip_style_tags; ''Iliad'''s keeps its apostrophe.
_STYLE_QUOTES = re.compile(r"''+")
_QUOTE_APOSTROPHE = re.compile(r"(?<=\w)'''(?=\w)")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_TABLE_DEBRIS = re.compile(r"^\s*(?:\{\||\|\}|\||!)")
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)")
_OPEN_PAREN_PUNCT = re.compile(r"\(\s*[,;:]\s*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?:;][\"'”’)\]]*$")
_MIN_UNPUNCTUATED_WORDS = 10  # a paragraph not ending like a sentence is kept only if this long
_RANGE_WORDS = frozenset({"-", "–", "to", "and", "or", "by", "x", "×", "+/-", "±"})
_PASS_THROUGH = frozenset(
    "nowrap nobr nobreak small smaller big larger nobold noitalic em strong var sc smallcaps "
    "abbr lang-en keep together".split()
)
_SYMBOLS = {"'": "'", "snd": " – ", "spaced ndash": " – ", "ndash": "–", "mdash": "—", "nbsp": " "}


def _positional(template: Template) -> list[str]:
    return [_render(p.value).strip() for p in template.params if not p.showkey]


def _convert(args: list[str]) -> str:
    if len(args) >= 4 and args[1] in _RANGE_WORDS:
        return f"{args[0]} {args[1]} {args[2]} {args[3]}"
    return " ".join(args[:2])


def _fraction(args: list[str]) -> str:
    if len(args) >= 3:
        return f"{args[0]} {args[1]}/{args[2]}"
    return "/".join(args[:2]) if len(args) == 2 else (f"1/{args[0]}" if args else "")


def _template_text(template: Template) -> str:
    """The words an inline template stands for, or "" for every other template."""
    name = str(template.name).strip().lower().replace("_", " ")
    if name in _SYMBOLS:
        return _SYMBOLS[name]
    if name in ("convert", "cvt"):
        return _convert(_positional(template))
    if name in ("frac", "sfrac"):
        return _fraction(_positional(template))
    if name == "lang" or name in _PASS_THROUGH or name.startswith("lang-"):
        args = _positional(template)
        return args[1] if name == "lang" and len(args) > 1 else (args[0] if args else "")
    return ""


def _link_text(link: Wikilink) -> str:
    title = str(link.title).strip()
    visible = title.startswith(":")  # [[:Category:X]] is an ordinary link to the category page
    title = title.lstrip(":").strip()
    prefix = title.split(":", 1)[0].strip().lower() if ":" in title else ""
    if not visible and prefix in _DROP_LINKS:
        return ""
    if not visible and link.text is None and _INTERLANGUAGE.match(prefix):
        return ""  # [[de:Anarchismus]]: an interlanguage link, shown in the sidebar, not the text
    text = _render(link.text).strip() if link.text is not None else ""
    return text or title


def _tag_text(tag: Tag) -> str:
    if tag.wiki_markup in ("*", "#", ";", ":"):
        return _LIST_MARK
    name = str(tag.tag).strip().lower()
    if name in _DROP_TAGS:
        return ""
    if name == "br":
        return " "
    if name == "hr":
        return "\n"
    return _render(tag.contents) if tag.contents is not None else ""


def _node_text(node: Node) -> str:
    if isinstance(node, Text):
        return _STYLE_QUOTES.sub("", _QUOTE_APOSTROPHE.sub("'", node.value))
    if isinstance(node, Wikilink):
        return _link_text(node)
    if isinstance(node, Template):
        return _template_text(node)
    if isinstance(node, Tag):
        return _tag_text(node)
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, ExternalLink):  # [url title] shows its title; a bare or untitled url nothing
        return _render(node.title) if node.brackets and node.title is not None else ""
    if isinstance(node, Heading):
        return "\n"  # headings are dropped; the line break keeps paragraphs apart
    return ""  # comments, template arguments ({{{1}}})


def _render(code: Wikicode) -> str:
    return "".join(_node_text(node) for node in code.nodes)


def _tidy(paragraph: str) -> str:
    """Collapse spaces and mend the punctuation that removed templates and references leave."""
    text = _SPACES.sub(" ", _HTML_TAG.sub("", _MAGIC_WORD.sub("", paragraph))).strip()
    text = _OPEN_PAREN_PUNCT.sub("(", _EMPTY_PARENS.sub("", text))
    return _SPACES.sub(" ", _SPACE_BEFORE_PUNCT.sub(r"\1", text)).strip()


def _paragraphs(rendered: str) -> list[str]:
    """Rendered text to paragraphs: blank, list and table-debris lines end a paragraph."""
    paragraphs, current = [], []
    for line in rendered.split("\n"):
        prose = bool(line.strip()) and not line.lstrip().startswith(_LIST_MARK)
        if prose and not _TABLE_DEBRIS.match(line):
            current.append(line)
            continue
        paragraphs.append(" ".join(current))
        current = []
    paragraphs.append(" ".join(current))
    tidied = (_tidy(paragraph.replace(_LIST_MARK, " ")) for paragraph in paragraphs)
    return [p for p in tidied if _is_passage(p)]


def _is_passage(paragraph: str) -> bool:
    """Prose, not a caption, a bold pseudo-heading ("Notes") or a stub left by a removed list."""
    if not any(c.isalpha() for c in paragraph):
        return False
    return bool(_SENTENCE_END.search(paragraph)) or paragraph.count(" ") + 1 >= _MIN_UNPUNCTUATED_WORDS


def clean_wikitext(wikitext: str) -> list[str]:
    """The prose paragraphs of an article's wikitext, each on one line (see the module docstring)."""
    stripped = _REF.sub("", _COMMENT.sub("", wikitext))
    # skip_style_tags: an unbalanced '' or ''' (common) would otherwise derail the parse after it
    return _paragraphs(_render(mwparserfromhell.parse(stripped, skip_style_tags=True)))


# ----------------------------------------------------------------------------------------------
# The XML dump.


@dataclass(frozen=True)
class _Page:
    title: str
    id: int
    namespace: int
    redirect: bool
    text: str


_OPENERS: dict[bytes, Callable[[Path], IO[bytes]]] = {
    b"BZh": lambda path: bz2.open(path, "rb"),
    b"\x1f\x8b": lambda path: gzip.open(path, "rb"),
}


def _open_dump(path: Path) -> IO[bytes]:
    """The dump's XML bytes, decompressing bz2 or gzip as the file's first bytes say."""
    try:
        with open(path, "rb") as probe:
            magic = probe.read(3)
    except OSError as error:
        raise file_error(path, f"cannot read: {error.strerror or error}") from None
    for prefix, opener in _OPENERS.items():
        if magic.startswith(prefix):
            return opener(path)
    if path.suffix in (".bz2", ".gz"):
        raise file_error(path, f"not a {path.suffix[1:]} file (its first bytes are {magic!r})")
    return open(path, "rb")


def _child_text(element: ET.Element, tag: str) -> str:
    child = element.find(tag)
    return (child.text or "") if child is not None else ""


def _page(element: ET.Element, ns: str) -> _Page:
    """A <page>, taking the text of its last <revision> (a history dump has many)."""
    revisions = element.findall(f"{ns}revision")
    text = _child_text(revisions[-1], f"{ns}text") if revisions else ""
    redirect = element.find(f"{ns}redirect") is not None or text.lstrip()[:9].upper() == "#REDIRECT"
    page_id = _child_text(element, f"{ns}id").strip()
    namespace = _child_text(element, f"{ns}ns").strip()
    return _Page(
        title=_child_text(element, f"{ns}title"),
        id=int(page_id) if page_id.isdigit() else -1,
        namespace=int(namespace) if namespace.lstrip("-").isdigit() else 0,
        redirect=redirect,
        text=text,
    )


def _pages_in(root: ET.Element, events: Iterator[tuple[str, ET.Element]], path: Path) -> Iterator[_Page]:
    name = root.tag.rpartition("}")[2]
    if name != "mediawiki":
        raise file_error(path, f"not a MediaWiki XML dump (its root element is <{name}>)")
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    for event, element in events:
        if event == "end" and element.tag == f"{ns}page":
            yield _page(element, ns)
            root.clear()  # drop the finished page (and anything before it): memory stays flat


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn damaged-input errors met while streaming the dump into BertkitErrors naming it."""
    try:
        yield
    except ET.ParseError as error:
        raise file_error(path, f"malformed or truncated XML ({error})") from None
    except EOFError:
        raise file_error(path, "truncated compressed file (it ends before its end-of-stream marker)") from None
    except OSError as error:
        raise file_error(path, f"corrupt compressed data ({error})") from None


def _iter_pages(path: Path) -> Iterator[_Page]:
    """Every <page> of the dump, streamed; damaged input raises a BertkitError naming the file."""
    with _open_dump(path) as stream, _read_errors(path):
        events = ET.iterparse(stream, events=("start", "end"))
        try:
            _, root = next(events)
        except ET.ParseError as error:
            raise file_error(path, f"not an XML file ({error})") from None
        yield from _pages_in(root, events, path)


def _clean_page(_: None, page: _Page) -> Article:
    return Article(page.title, page.id, "\n".join(clean_wikitext(page.text)))


def _article_pages(path: Path, stats: WikiStats) -> Iterator[_Page]:
    for page in _iter_pages(path):
        stats.pages += 1
        if page.namespace != 0:
            stats.other_namespace += 1
        elif page.redirect:
            stats.redirects += 1
        else:
            yield page


def _cleaned(path: Path, stats: WikiStats, workers: int) -> Iterator[Article]:
    """Cleaned articles in dump order, counted into ``stats``; empty ones are counted, not yielded.

    Pages are read as the workers need them (a few per worker in flight), so memory stays flat.
    """
    for article in ordered_map(_clean_page, _article_pages(path, stats), None, workers):
        if not article.text:
            stats.empty += 1
            continue
        stats.articles += 1
        stats.paragraphs += article.text.count("\n") + 1
        stats.text_bytes += len(article.text.encode("utf-8"))
        yield article


def iter_articles(dump_path: str | Path, workers: int = 1) -> Iterator[Article]:
    """Yield the cleaned articles of a MediaWiki XML dump (bz2, gzip or plain), in dump order.

    Redirects, pages outside the article namespace and pages with no text left are skipped. Not
    a dump, not XML, or a truncated/corrupt compressed file raises a BertkitError naming the file.
    """
    yield from _cleaned(Path(dump_path), WikiStats(), workers)


def _format(article: Article) -> str:
    title = html.escape(article.title, quote=True)
    return f'<doc id="{article.id}" title="{title}">\n{article.text}\n</doc>\n\n'


def article_file_name(index: int) -> str:
    """The name of the ``index``-th article file: ``articles-00000.txt``, ..."""
    return f"articles-{index:05d}.txt"


def _remove_stale(out_dir: Path, written: int) -> None:
    """Delete article files numbered past this run's, left by an earlier, longer run."""
    for path in out_dir.glob("articles-[0-9][0-9][0-9][0-9][0-9].txt"):
        if int(path.stem.split("-")[1]) >= written:
            path.unlink()


def write_articles(dump_path: str | Path, out_dir: str | Path, per_file: int = 10000, workers: int = 1) -> WikiStats:
    """Write the dump's articles to ``out_dir/articles-NNNNN.txt``, ``per_file`` articles a file.

    Each file is written atomically (temp name, then rename); see the module docstring for the
    layout. Returns the counts of pages read, skipped and written.
    """
    if per_file < 1:
        raise BertkitError(f"per_file must be at least 1, not {per_file}")
    out_dir, stats = Path(out_dir), WikiStats()
    if out_dir.exists() and not out_dir.is_dir():
        raise file_error(out_dir, "exists and is not a directory (the output is a directory of article files)")
    articles = _cleaned(Path(dump_path), stats, workers)
    for first in articles:  # each file: one article, then up to per_file - 1 more
        with atomic_open(out_dir / article_file_name(stats.files)) as handle:
            handle.write(_format(first))
            for article in itertools.islice(articles, per_file - 1):
                handle.write(_format(article))
        stats.files += 1
    _remove_stale(out_dir, stats.files)
    return stats
