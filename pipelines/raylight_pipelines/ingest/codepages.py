# ruff: noqa: RUF001  (texts in other scripts and their punctuation are the point here)
"""Which legacy 8-bit code page a text without a declaration was written in.

Short texts decode without an error in a dozen single-byte code pages (`ñandú` is `ńandú` in cp1250, `±and·`
in cp775), and a detector's statistics on a line or two cannot tell them apart. The decision for the whole
kind, in this order:

1. Candidates are the code pages the bytes decode in strictly (no undefined byte), that yield no control
   character (C0 other than tab/line ends/form feed, C1, U+FFFD).
2. Fewest *misfits*: a non-letter symbol glued to a letter or to another symbol (`t±rminos`, `carg¾`, `╥╔╫`),
   a case flip inside a word
   (`tÚrminos`, KOI8-R read as cp1251 `оПХБЕР`), two scripts in one word (`tщrminos`).
3. Fewest letters outside one language's alphabet: the non-ASCII letters of a right decoding belong to one
   language (Spanish `ñ á é í ó ú`), a wrong one scatters them (`ń ś į ķ`).
4. The platforms' common code pages first: Windows-1252 (the default HTML5 prescribes for undeclared Western
   text), then the other Windows code pages, then ISO-8859, KOI8, Mac and DOS ones.

Only the first `SAMPLE` bytes are scored; the winner decodes the whole input.
"""

from __future__ import annotations

import functools
import unicodedata

SAMPLE = 16 * 1024

# Preference order (rule 4). Windows first, Western first among them.
PREFERRED: tuple[str, ...] = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "cp1255", "cp1256",
    "iso8859_15", "iso8859_2", "iso8859_5", "iso8859_7", "iso8859_9", "iso8859_13", "iso8859_4",
    "koi8_r", "koi8_u", "mac_roman", "mac_cyrillic", "cp850", "cp852", "cp866", "cp437",
)

# Lower-case letters beyond ASCII of the languages these code pages are written in (rule 3).
_ALPHABETS: dict[str, str] = {
    "es": "áéíóúñü", "fr": "àâæçéèêëîïôœùûüÿ", "de": "äöüß", "pt": "áâãàçéêíóôõú", "it": "àèéìíîòóùú",
    "ca": "àçèéíïòóúü", "nl": "éëïöüèáó", "sv": "åäöé", "fi": "åäöšž", "da": "æøåé", "is": "áðéíóúýþæö",
    "pl": "ąćęłńóśźż", "cs": "áčďéěíňóřšťúůýž", "sk": "áäčďéíĺľňóôŕšťúýž", "hu": "áéíóöőúüű",
    "ro": "ăâîșşțţ", "hr": "čćđšž", "sl": "čšž", "tr": "çğıöşüâî", "lt": "ąčęėįšųūž", "lv": "āčēģīķļņšūž",
    "et": "äöõüšž", "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "uk": "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя",
    "be": "абвгдеёжзійклмнопрстуўфхцчшыьэюя", "bg": "абвгдежзийклмнопрстуфхцчшщъьюя",
    "sr": "абвгдђежзијклљмнњопрстћуфхцчџш", "mk": "абвгдѓежзѕијклљмнњопрстќуфхцчџш",
    "el": "αάβγδεέζηήθιίϊΐκλμνξοόπρσςτυύϋΰφχψωώ",
    "he": "".join(chr(c) for c in range(0x5D0, 0x5EB)),
    "ar": "".join(chr(c) for c in range(0x621, 0x64B)) + "پچژگ",
}
# Punctuation that sits against words in running text of these languages (not a misfit).
_WORD_PUNCTUATION = frozenset("‘’‚“”„«»‹›¿¡–—…")
_ALLOWED_CONTROLS = frozenset("\t\n\r\f")


@functools.cache
def single_byte(encoding: str) -> bool:
    """True when `encoding` maps every byte to one character (a code page, not a multi-byte encoding)."""
    try:
        return len(bytes(range(256)).decode(encoding, errors="replace")) == 256
    except LookupError:
        return False


def _script(char: str) -> str:
    return unicodedata.name(char, "?").split(" ")[0]


def _odd(char: str) -> bool:
    """A non-ASCII character that is neither a letter, a digit, a space nor word punctuation."""
    return (not char.isascii() and not char.isalpha() and not char.isdecimal() and not char.isspace()
            and char not in _WORD_PUNCTUATION)


def misfits(text: str) -> int | None:
    """Rule 1 and 2: None when `text` holds a control character, else the number of misfits in it."""
    count = 0
    previous = " "
    word_scripts: set[str] = set()
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if (category == "Cc" and char not in _ALLOWED_CONTROLS) or category in ("Co", "Cn") or char == "\ufffd":
            return None
        if category[0] == "L":
            if not char.isascii() or not previous.isascii():
                if char.isupper() and previous.islower():
                    count += 1
                word_scripts.add(_script(char))
            else:
                word_scripts.add("LATIN")
        else:
            if len(word_scripts) > 1:
                count += 1
            word_scripts = set()
            if _odd(char):
                following = text[index + 1] if index + 1 < len(text) else " "
                if previous.isalpha() or following.isalpha() or _odd(previous) or _odd(following):
                    count += 1
        previous = char
    return count + (len(word_scripts) > 1)


def foreign_letters(text: str) -> int:
    """Rule 3: occurrences of non-ASCII letters outside the alphabet of the language that fits best."""
    letters = [c.lower() for c in text if c.isalpha() and not c.isascii()]
    if not letters:
        return 0
    return min(sum(1 for c in letters if c not in alphabet) for alphabet in _ALPHABETS.values())


def best_code_page(data: bytes, extra: tuple[str, ...] = ()) -> tuple[str, int, int] | None:
    """The code page the rules above choose for `data` among `PREFERRED` and `extra` (e.g. a detector's
    single-byte candidates, tried after the preferred ones), with its misfits and foreign letters (both 0
    for a clean decoding); None when no candidate decodes without a control character."""
    sample = data[:SAMPLE]
    ranked: list[tuple[int, int, int, str]] = []
    for rank, encoding in enumerate(dict.fromkeys(PREFERRED + tuple(e for e in extra if single_byte(e)))):
        try:
            text = sample.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
        bad = misfits(text)
        if bad is not None:
            ranked.append((bad, foreign_letters(text), rank, encoding))
    if not ranked:
        return None
    bad, foreign, _, encoding = min(ranked)
    return encoding, bad, foreign
