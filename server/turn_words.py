"""What the words of a turn say about it: an unfinished phrase, or a mere acknowledgement.

The completion model listens to how the voice ends; the words add what prosody alone misses. A
text-to-speech or a flat-voiced caller can end "I'd like to order a pizza with" on a falling
tone, yet no sentence ends on "with". And while the agent speaks, "uh-huh" or "okay" is the
listener keeping the conversation going, not a request to stop (English only, like the rest of
the offline stack's turn-taking; other languages fall back on the audio and the duration).
"""

from __future__ import annotations

import re

# A turn whose last word is one of these has more to come: conjunctions, prepositions,
# articles, possessives, auxiliaries and fillers. Whisper often writes a trailing "." after a
# cut-off phrase, so punctuation other than "?" or "!" does not count against them.
UNFINISHED_LAST_WORDS = frozenset(
    """
    a an the and or but nor so because since although though while whereas unless until if
    whether than that which who whom whose where when to of for from with without into onto
    in on at by about as like between through over under after before during against toward
    towards per via my your his her its our their this these those some any every each no
    is are was were am be been being do does did have has had will would shall should can
    could may might must also just very really um uh er erm ah uhm hmm mm
    i'm i've i'd i'll you're we're they're it's there's what's let's
    plus minus
    """.split()
)
# Of those, the words no question ends on either ("...my sister and?"): an auxiliary can
# ("Do you know where it is?"), a conjunction, an article or a possessive cannot.
NEVER_LAST_WORDS = frozenset(
    """
    a an the and or nor but because although though whereas unless my your our their
    um uh er erm uhm
    """.split()
)
# Words the final decode may have misheard as the last word of a turn ("flight to" written
# "flight too."): the function words of UNFINISHED_LAST_WORDS that rarely end a sentence.
# Pronouns, auxiliaries and fillers are left out: "That's wrong." has 0.19 on "that" in its
# last place, and no phrase is held because Whisper half-heard "is" or "um" instead.
OPEN_ALTERNATIVES = frozenset(
    """
    a an the and or but nor because although though whereas unless if whether than to of for
    from with without into onto in on at by about as between through over under after before
    during against toward towards per via my your his her its our their
    """.split()
)
# How Whisper writes "to" or "for" that ends an unfinished turn ("my flight to..." -> "my flight
# too.", "...tube.", "a table for..." -> "a table 4."): such a last word has the STT asked
# whether it was the open word even when the voice sounded finished (WhisperSTT.open_ending).
OPEN_WORD_SPELLINGS = frozenset("too two 2 tube four 4 fore".split())
# Words that say the caller is reading out a number (a phone, account or order number); such
# numbers are read in groups with pauses between them.
IDENTIFIER_WORDS = frozenset(
    """
    number numbers code pin zip postcode account phone card reference confirmation id
    extension policy ticket order serial
    """.split()
)
# A number read after one of them with fewer digits than this is still being read.
IDENTIFIER_MIN_DIGITS = 4
_DIGIT_WORDS = {
    **{w: 1 for w in "zero oh one two three four five six seven eight nine".split()},
    **{w: 2 for w in "ten eleven twelve thirteen fourteen fifteen sixteen seventeen".split()},
    **{w: 2 for w in "eighteen nineteen twenty thirty forty fifty sixty seventy eighty".split()},
    "ninety": 2,
}
# Fillers that end an utterance which only hesitates ("um", "so um").
FILLERS = frozenset("um uh er erm uhm ah hmm mm".split())

# Things a listener says to keep the speaker going, and Whisper's usual renderings of noises
# and of short unclear sounds. A turn made only of these while the agent talks is not answered.
BACKCHANNEL_PHRASES = frozenset(
    p.strip()
    for p in """
    uh-huh, uh huh, uhhuh, mm-hmm, mm hmm, mmhmm, mhm, mm, mmm, hmm, hm, um, uh, ah, oh, ooh,
    aha, ah-ha, yeah, yea, yes, yep, yup, ya, okay, ok, o.k., k, okey, alright, all right,
    right, sure, true, exactly, absolutely, definitely, indeed, of course, i see, got it,
    gotcha, i got it, i understand, understood, makes sense, that makes sense, cool, nice,
    great, good, fine, perfect, wow, really, interesting, i know, uh-uh, you, thank you,
    thanks, oh okay, oh i see, yeah yeah, yes yes, okay okay, right right, sure sure,
    yeah right, oh right, oh yeah, ah okay, ah i see, mm okay, okay cool, okay great,
    sounds good, go on, go ahead, keep going
    """.split(",")
)
# Words that ask the agent to stop or to listen, whatever follows them.
INTERRUPTION_WORDS = frozenset(
    """
    wait stop hold hang sorry excuse pardon no nope nah but actually hey hello listen what why
    shut quiet enough moment second minute sec repeat again slow slower louder pause back
    """.split()
)
# Speech over the agent shorter than this, of one or two words, is an acknowledgement unless it
# holds an interruption word (Piper's "mm-hmm" lasts ~0.6 s; "one moment" has a word for it).
SHORT_UTTERANCE_SECONDS = 0.8
_WORD = re.compile(r"[a-z0-9][a-z0-9'.-]*")


def _words(text: str) -> list[str]:
    return [w.strip(".'-") for w in _WORD.findall(text.lower().replace("’", "'"))]


# Questions that may end on a preposition ("Where are you from?", "Who should I talk to?").
WH_WORDS = frozenset("what what's where where's who who's whom which whose how how's".split())
PREPOSITIONS = frozenset(
    "to of for from with without into onto in on at by about like through over under after".split()
)


def sounds_unfinished(text: str) -> bool:
    """The transcript stops where no sentence can end ("a table for", "because um").

    Whisper often ends a cut-off phrase with "." or even "?" ("Is it possible to?"): only a
    wh-question may end on a preposition ("What are you looking at?").
    """
    stripped = text.strip()
    if not stripped or stripped.endswith("!"):
        return False
    if stripped.endswith(("...", "…", ",", "-", "—", "–", ":", ";")):
        return True
    words = _words(stripped)
    if reads_short_number(words):
        return True
    if not words or words[-1] not in UNFINISHED_LAST_WORDS or answers_in_short(stripped):
        return False
    if not stripped.endswith("?") or words[-1] in NEVER_LAST_WORDS:
        return True
    if words[-1] in PREPOSITIONS:
        return words[0] not in WH_WORDS
    return False


def leaves_open(before: str, word: str, ending: str) -> bool:
    """The transcript `before` + `word` + `ending` (its punctuation) stops mid-phrase."""
    return sounds_unfinished(f"{before} {word}{ending}".strip())


# Words after which an auxiliary ends a short answer ("Yes, I do.", "It is.", "We can."), and
# the words before those that keep it open ("...if you could", "...that it is").
SUBJECT_PRONOUNS = frozenset("i you he she it we they there".split())
OPENING_SUBORDINATORS = frozenset(
    "if whether that because than unless until although though so and or but".split()
)
AUXILIARIES = frozenset(
    """
    is are was were am be been do does did have has had will would shall should can could may
    might must
    """.split()
)
THINKING_VERBS = frozenset("think hope guess believe suppose said say says told".split())


def answers_in_short(text: str) -> bool:
    """The last clause is a whole short answer although its last word usually opens a phrase:
    "No.", "Oh no.", "Yes, I do.", "I think so.", "It is." (not "There is no", "My name is",
    "I was wondering if you could")."""
    clause = _words(re.split(r"[,;:.!?]+\s", " " + text.strip().lower())[-1])
    if not clause:
        return False
    last, before = clause[-1], clause[:-1]
    if last == "no":
        return not before or before[-1] in ("oh", "no", "say", "said", "says")
    if last == "so":
        return bool(before) and before[-1] in THINKING_VERBS
    if last in AUXILIARIES and before and before[-1] in SUBJECT_PRONOUNS:
        return len(before) < 2 or before[-2] not in OPENING_SUBORDINATORS
    return False


def may_be_open_word(text: str) -> bool:
    """The last word may be Whisper's spelling of a "to" or "for" that left the phrase open."""
    words = _words(text)
    return bool(words) and words[-1] in OPEN_WORD_SPELLINGS


def reads_short_number(words: list[str]) -> bool:
    """The turn ends in the first digits of a number the caller was asked for or is giving
    ("my phone number is 555", "the code is four two"): the rest usually follows a pause."""
    digits = 0
    for i in range(len(words) - 1, -1, -1):
        count = _digits(words[i])
        if count == 0:
            break
        digits += count
    else:
        return False  # only a number: an answer to "how many?" ends there
    if digits == 0 or digits >= IDENTIFIER_MIN_DIGITS:
        return False
    context = words[max(0, i - 3) : i + 1]
    return any(word in IDENTIFIER_WORDS for word in context)


def _digits(word: str) -> int:
    if word.replace(",", "").replace("-", "").isdigit():
        return sum(c.isdigit() for c in word)
    return _DIGIT_WORDS.get(word, 0)


def is_question(text: str) -> bool:
    return text.strip().endswith("?")


def is_backchannel(text: str) -> bool:
    """Only acknowledgements or noise: "uh-huh", "Okay.", "Yeah, yeah.", "Mm-hmm, I see."

    Empty text counts: a cough or a breath transcribes to nothing.
    """
    lowered = text.lower().replace("’", "'")
    parts = [p for p in re.split(r"[.,!?;:…]+", lowered) if p.strip()]
    for part in parts:
        words = _words(part)
        phrase = " ".join(words)
        if phrase and phrase not in BACKCHANNEL_PHRASES:
            if not all(word in BACKCHANNEL_PHRASES for word in words):  # "oh okay sure"
                return False
    return True


def is_interruption(text: str) -> bool:
    """Words that stop the agent at once: "wait", "sorry", "no", "hold on", "what"."""
    return any(word in INTERRUPTION_WORDS for word in _words(text))


# More letters than this a second of speech are a mishearing: Whisper turns a short noise or
# "got it" into "Dharad. Dharud. Dara. Darud." (conversational English is ~15 letters a
# second, fast speech ~20; the VAD counts only the voiced part of the speech).
MAX_LETTERS_PER_SECOND = 25.0
ALWAYS_PLAUSIBLE_LETTERS = 14  # "I have a question", "Can you tell me"
# Words the recognizer gave a lower mean log probability than this are a guess. Whisper base
# (greedy interims and the beam-2 final, Piper speech at 16 kHz and 8 kHz G.711, 3 speeds):
# the short "mm-hmm", "uh-huh", "I see" it wrote as three or more words ("In a month.", "In
# my mom.", "Ow. Ow! Ow!", "M M M") scored -0.79 to -2.25; the words of real interruptions
# -0.05 to -0.41 once whole, and -0.47 to -0.56 for "Wait a moment." 0.45 s in.
UNSURE_LOG_PROB = -0.7


def heard_clearly(text: str, speech_seconds: float, log_prob: float = 0.0) -> bool:
    """The words can be what was said: the recognizer was sure enough of them, no decoding
    loop, and no more letters than the speech could hold."""
    if log_prob < UNSURE_LOG_PROB or looks_repetitive(text):
        return False
    letters = sum(len(word) for word in _words(text))
    return letters <= max(ALWAYS_PLAUSIBLE_LETTERS, MAX_LETTERS_PER_SECOND * speech_seconds)


def interrupts(text: str, speech_seconds: float, log_prob: float = 0.0) -> bool:
    """An interim transcript of speech over the agent that already asks it to stop: an
    interruption word, or three words or more, heard clearly, that are not an acknowledgement.

    Fewer or unclear words wait for more: Whisper hears a short "uh-huh" or "mm-hmm" as "How?",
    "Enema Enema" or, unsure, "In a month." (the utterance's end then decides, see
    `is_short_acknowledgement`; speech going on past MAX_BACKCHANNEL_SECONDS stops the agent).
    """
    if is_interruption(text):
        return True
    if not heard_clearly(text, speech_seconds, log_prob):
        return False
    return not is_backchannel(text) and len(_words(text)) >= 3


def is_short_acknowledgement(text: str, speech_seconds: float, log_prob: float = 0.0) -> bool:
    """A whole utterance heard over the agent that does not ask it to stop: acknowledgements,
    noise, or one or two words, or words the recognizer was unsure of, under
    SHORT_UTTERANCE_SECONDS of speech."""
    if is_backchannel(text):
        return True
    if speech_seconds >= SHORT_UTTERANCE_SECONDS or is_interruption(text):
        return False
    return len(_words(text)) <= 2 or not heard_clearly(text, speech_seconds, log_prob)


def ends_sentence(text: str) -> bool:
    """The transcript ends like a finished sentence: end punctuation, no phrase left open."""
    stripped = text.strip()
    return (
        stripped.endswith((".", "?", "!"))
        and not stripped.endswith("...")
        and not (sounds_unfinished(stripped))
    )


def same_words(a: str, b: str) -> bool:
    """The same words, whatever the case and punctuation ("Paris?" and "paris.")."""
    return _words(a) == _words(b)


def before_repetition(text: str) -> str:
    """`text` up to where it starts repeating the way `looks_repetitive` means: before the
    second time a word trigram comes or the third time a bigram does ("Call me back at 555.
    Call me Back at 5555." -> "Call me back at 555."). Text that does not repeat comes back
    whole."""
    matches = list(_WORD.finditer(text.lower().replace("’", "'")))
    words = [m.group().strip(".'-") for m in matches]
    trigrams: set[tuple[str, ...]] = set()
    bigrams: dict[tuple[str, ...], int] = {}
    for i in range(len(words)):
        trigram, bigram = tuple(words[i : i + 3]), tuple(words[i : i + 2])
        if (len(trigram) == 3 and trigram in trigrams) or bigrams.get(bigram, 0) == 2:
            return text[: matches[i].start()].rstrip(" ,;:-")
        if len(trigram) == 3:
            trigrams.add(trigram)
        if len(bigram) == 2:
            bigrams[bigram] = bigrams.get(bigram, 0) + 1
    return text


def looks_repetitive(text: str) -> bool:
    """A decoding loop ("it's the music, it's the music"): a word trigram said twice, or a
    bigram three times. Such an interim is never reused as the turn's transcript."""
    words = _words(text)
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    bigrams = [tuple(words[i : i + 2]) for i in range(len(words) - 1)]
    return len(set(trigrams)) < len(trigrams) or any(bigrams.count(b) >= 3 for b in set(bigrams))
