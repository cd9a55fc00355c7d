"""A deterministic product catalogue of any size, generated slot by slot.

A catalogue is a sequence of `size` slots (0-based positions; pages are
windows over it). Each slot is one of:

    valid      an ordinary record; its id number is `index + 1`
    defect     a deliberately malformed record (missing id or title, blank
               title, null or negative price) that a client must dead-letter
    duplicate  a byte-identical copy of a valid slot on an earlier page
               (at the default page size), so ids repeat across pages

Every property is a pure function of (seed, index), so nothing is held in
memory per product: a 1,000,000-product catalogue costs the same as a small
one until `truth()` is asked for, which scans once and caches the few lists
whose length grows with the defect and duplicate rates.

Heterogeneity (valid variants a client must normalise) is per product: the
price, category and title each deviate from the style's native form with
probability `heterogeneity`. Styles decide what the forms look like.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, NamedTuple

from ._hashing import draw, mix64, stream_key, unit

DEFECTS = ("missing_id", "missing_title", "blank_title", "null_price", "negative_price")

# (slug, display name, low price in cents, high price in cents, nouns)
CATEGORIES: tuple[tuple[str, str, int, int, tuple[str, ...]], ...] = (
    ("smartphones", "Smartphones", 9_900, 149_900, ("Phone", "Smartphone")),
    ("laptops", "Laptops", 29_900, 349_900, ("Laptop", "Notebook")),
    ("tablets", "Tablets", 14_900, 129_900, ("Tablet", "E-Reader")),
    ("fragrances", "Fragrances", 1_500, 18_000, ("Perfume", "Eau de Parfum")),
    ("skin-care", "Skin Care", 500, 9_000, ("Serum", "Cream", "Lotion")),
    ("groceries", "Groceries", 99, 2_500, ("Coffee", "Honey", "Olive Oil")),
    ("home-decoration", "Home Decoration", 900, 25_000, ("Lamp", "Vase", "Mirror")),
    ("furniture", "Furniture", 4_900, 199_900, ("Chair", "Table", "Sofa")),
    ("kitchen-accessories", "Kitchen Accessories", 500, 15_000, ("Knife", "Pan", "Mug")),
    ("sports-accessories", "Sports Accessories", 900, 30_000, ("Ball", "Racket", "Yoga Mat")),
    ("mens-shoes", "Mens Shoes", 2_900, 29_900, ("Sneakers", "Boots", "Loafers")),
    ("womens-bags", "Womens Bags", 2_900, 89_900, ("Handbag", "Tote", "Clutch")),
    ("sunglasses", "Sunglasses", 1_900, 39_900, ("Sunglasses", "Aviators")),
    ("motorcycle", "Motorcycle", 199_900, 2_499_900, ("Motorcycle", "Scooter")),
)
ADJECTIVES = tuple(
    "Handmade Ergonomic Rustic Sleek Refined Practical Elegant Compact Vintage Modern Classic "
    "Premium Portable Durable Luxurious Smart Recycled Gorgeous Fantastic Licensed".split()
)
MATERIALS = tuple(
    "Steel Wooden Cotton Granite Leather Bamboo Ceramic Rubber Plastic Silk Bronze Glass "
    "Marble Wool Linen Carbon".split()
)
# Unicode and stray whitespace that a client must cope with in titles.
UNICODE_WORDS = ("Café", "Crème", "Größe", "Ñandú", "Æther", "Zürich", "日本", "☕", "naïve")
WHITESPACE = ("  {}", "{}  ", " \t{}\n", "{}\u00a0", "\u2003{}")
BRANDS = tuple(
    "Essence|Glamour Beauty|Velvet Touch|Chic Cosmetics|Nail Couture|Calvin Klein|Chanel|Dior|Apple|"
    "Samsung|Oppo|Huawei|Lenovo|Dell|Asus|Annibale Colombo|Furniture Co.|Knoll|Bath Trends".split("|")
)
WORDS = tuple(
    "the a with for everyday use designed crafted quality comfort style light strong perfect gift "
    "home office travel made to last and simple care fresh natural bold clean".split()
)

# Pools of prebuilt strings, indexed by a product's bits: building sentences
# per record would dominate the cost of serving a page (times: WHEN_STAMPS).
_POOL = 1024


def _sentence(k: int) -> str:
    bits = mix64(k)
    return " ".join(WORDS[(bits >> (5 * i)) % len(WORDS)] for i in range(11)).capitalize() + "."


def _extras(k: int) -> tuple[float, float, int, int, float, float, float]:
    """Secondary numbers of a product: discount %, rating, stock, weight, w, h, d."""
    bits = mix64(k + 2 * _POOL)
    return (
        (bits % 2000) / 100,
        1 + (bits >> 12) % 400 / 100,
        (bits >> 20) % 150,
        1 + (bits >> 28) % 9,
        (bits >> 32) % 3000 / 100,
        (bits >> 42) % 3000 / 100,
        (bits >> 52) % 3000 / 100,
    )


# Event time: every product was last updated at one of WHEN steps spread
# evenly over a year, in catalogue order (a product's position / size: APIs
# commonly list by creation), so that its record's `updatedAt` (or `created`,
# ...) and its price tell one story. Prices drift per category over that
# year (DRIFT, a share of the price), swing with a season of SEASON days
# (SEASONAL, a share, and a phase per category), and some categories step
# once (STEPS: the step from which on, the factor). `price_factor` is the
# multiplier on a product's base price; `truth()` gives this design.
WHEN = _POOL
YEAR_START = 1_704_067_200  # 2024-01-01T00:00:00Z
YEAR_SECONDS = 364 * 86_400  # 52 weeks
SEASON, SEASONAL = 91.0, 0.04
DRIFT = (0.10, -0.08, 0.05, 0.15, 0.02, 0.30, 0.00, 0.12, 0.06, -0.05, 0.20, 0.08, -0.12, 0.25)
STEPS = {0: (768, 0.90), 5: (256, 1.08), 13: (512, 1.10)}  # smartphones, groceries, motorcycle


def _when_seconds(k: int) -> int:
    """Epoch seconds of time step k (its middle)."""
    return YEAR_START + (2 * k + 1) * YEAR_SECONDS // (2 * WHEN)


def _iso(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def price_factor(category: int, k: int) -> float:
    """What a product of `category` updated at time step `k` costs, as a
    multiple of its base price (see WHEN)."""
    import math

    days = (_when_seconds(k) - YEAR_START) / 86_400
    factor = (1.0 + DRIFT[category] * k / (WHEN - 1)) * (
        1.0 + SEASONAL * math.sin(2 * math.pi * days / SEASON + category)
    )
    step = STEPS.get(category)
    return factor * step[1] if step is not None and k >= step[0] else factor


def when_of(trend: float) -> int:
    """The time step of a product at position `trend` (0..1) of the catalogue."""
    return min(WHEN - 1, int(trend * WHEN))


SENTENCES = tuple(_sentence(k) for k in range(_POOL))
WHEN_SECONDS = tuple(_when_seconds(k) for k in range(WHEN))
WHEN_STAMPS = tuple(_iso(t) for t in WHEN_SECONDS)
EXTRAS = tuple(_extras(k) for k in range(_POOL))
# TITLES[category][adjective * len(MATERIALS) + material][noun]
TITLES = tuple(
    tuple(tuple(f"{a} {m} {n}" for n in cat[4]) for a in ADJECTIVES for m in MATERIALS) for cat in CATEGORIES
)


class Slot(NamedTuple):
    index: int
    kind: str  # "valid" | "defect" | "duplicate"
    of: int  # the slot whose record this one repeats; == index unless a duplicate
    defect: str | None = None


_M64 = (1 << 64) - 1
_PHI = 0x9E3779B97F4A7C15
_N_ADJ, _N_MAT, _N_CAT = len(ADJECTIVES), len(MATERIALS), len(CATEGORIES)
_LOW = tuple(c[2] for c in CATEGORIES)
_SPAN = tuple(c[3] - c[2] for c in CATEGORIES)
_N_NOUNS = tuple(len(c[4]) for c in CATEGORIES)
_FACTORS = tuple(tuple(price_factor(c, k) for k in range(WHEN)) for c in range(len(CATEGORIES)))


def facts(bits: int, threshold: int, trend: float) -> tuple[int, int, str, int | None]:
    """(category, cents, plain title, form bits or None) of a product's bits.

    `threshold` is the heterogeneity as a 20-bit integer, `trend` the
    product's position in the catalogue (0..1), which sets when it was last
    updated and so its price (see WHEN). Form bits are None when the price,
    category and title all keep the style's native form, the common case
    that the styles' fast paths render without building a Product."""
    category = bits % _N_CAT
    base = _LOW[category] + (bits >> 8) % _SPAN[category]
    cents = int(base * _FACTORS[category][min(WHEN - 1, int(trend * WHEN))])
    title = TITLES[category][((bits >> 24) % _N_ADJ) * _N_MAT + (bits >> 32) % _N_MAT][
        (bits >> 40) % _N_NOUNS[category]
    ]
    # Price, category and title deviate independently: three 20-bit uniforms
    # from one multiply-xorshift of the product's bits.
    f = (bits * _PHI) & _M64
    f ^= f >> 29
    if (f & 0xFFFFF) < threshold or (f >> 20 & 0xFFFFF) < threshold or (f >> 40 & 0xFFFFF) < threshold:
        return category, cents, title, f
    return category, cents, title, None


def created_step(bits: int, when: int) -> int:
    return max(0, when - (bits >> 13) % 200)


class Product:
    """The stable facts of one product; styles render it in their own schema."""

    __slots__ = ("bits", "category", "category_form", "cents", "defect", "index", "number",
                 "price_form", "title", "title_form", "when")  # fmt: skip

    def __init__(self, index: int, number: int, bits: int, threshold: int, defect: str | None,
                 trend: float, known: tuple[int, int, str, int | None] | None = None) -> None:  # fmt: skip
        """See `facts` for `threshold` and `trend`; `known`: facts already computed."""
        self.index = index
        self.number = number
        self.bits = bits
        self.defect = defect
        self.when = when_of(trend)  # the time step it was last updated at
        self.category, self.cents, self.title, f = known or facts(bits, threshold, trend)
        self.price_form = self.category_form = self.title_form = 0
        if f is not None:
            # The variant numbers (0 = native) from a second mixing round.
            g = (f * _PHI) & _M64
            if (f & 0xFFFFF) < threshold:
                self.price_form = 1 + (g >> 8) % 7
            if (f >> 20 & 0xFFFFF) < threshold:
                self.category_form = 1 + (g >> 24) % 7
            if (f >> 40 & 0xFFFFF) < threshold:
                self.title_form = 1 + (g >> 40) % 7
                self.title = self.decorated_title()

    def decorated_title(self) -> str:
        word = UNICODE_WORDS[(self.bits >> 48) % len(UNICODE_WORDS)]
        pad = WHITESPACE[(self.bits >> 52) % len(WHITESPACE)]
        return pad.format(f"{self.title} {word}" if self.title_form % 2 else f"{word} {self.title}")

    @property
    def slug(self) -> str:
        return CATEGORIES[self.category][0]

    @property
    def category_name(self) -> str:
        return CATEGORIES[self.category][1]

    @property
    def price(self) -> float:
        return self.cents / 100

    def extras_index(self) -> int:
        return (self.bits >> 17) % _POOL

    def sentence_index(self) -> int:
        return (self.bits >> 3) % _POOL

    def sentence(self) -> str:
        return SENTENCES[(self.bits >> 3) % _POOL]

    def created_step(self) -> int:
        """When it was created: up to 200 time steps before its update."""
        return created_step(self.bits, self.when)

    def created_at(self) -> str:
        return WHEN_STAMPS[self.created_step()]

    def updated_at(self) -> str:
        """Its event time: when it was last updated (and priced)."""
        return WHEN_STAMPS[self.when]

    def brand_index(self) -> int | None:
        """Some products have no brand at all (the key is absent upstream)."""
        return None if (self.bits >> 56) % 5 == 0 else (self.bits >> 44) % len(BRANDS)

    def brand(self) -> str | None:
        index = self.brand_index()
        return None if index is None else BRANDS[index]


class Catalogue:
    """`size` slots under `seed`; see the module docstring for slot kinds."""

    def __init__(
        self,
        size: int,
        seed: int = 0,
        *,
        page_size: int = 20,
        heterogeneity: float = 0.2,
        defect_rate: float = 0.03,
        duplicate_rate: float = 0.02,
    ) -> None:
        self.size = size
        self.seed = seed
        self.page_size = page_size
        self.heterogeneity = heterogeneity
        self.defect_rate = defect_rate
        self.duplicate_rate = duplicate_rate
        self._slot_key = stream_key(seed, "slot")
        self._product_key = stream_key(seed, "product")
        self.threshold = self._threshold = int(heterogeneity * (1 << 20))  # see `facts`

    def __repr__(self) -> str:
        return (
            f"Catalogue(size={self.size}, seed={self.seed}, heterogeneity={self.heterogeneity},"
            f" defect_rate={self.defect_rate}, duplicate_rate={self.duplicate_rate})"
        )

    def _base(self, index: int) -> tuple[str, int]:
        """The slot's own draw: ("duplicate"|"defect"|"valid", bits)."""
        bits = draw(self._slot_key, index)
        u = unit(bits)
        if u < self.duplicate_rate and index >= self.page_size:
            return "duplicate", bits
        if u < self.duplicate_rate + self.defect_rate:
            return "defect", bits
        return "valid", bits

    def slot(self, index: int) -> Slot:
        if not 0 <= index < self.size:
            raise IndexError(index)
        kind, bits = self._base(index)
        if kind == "defect":
            return Slot(index, "defect", index, DEFECTS[(bits >> 8) % len(DEFECTS)])
        if kind == "duplicate":
            # Repeat a record from one of the three default pages before this
            # one, if that slot is itself an ordinary record; otherwise this
            # slot stays ordinary (no chains, no duplicated defects).
            page_start = index - index % self.page_size
            span = min(page_start, 3 * self.page_size)
            target = page_start - 1 - (bits >> 8) % span
            if self._base(target)[0] == "valid":
                return Slot(index, "duplicate", target)
        return Slot(index, "valid", index)

    def product(self, index: int) -> Product:
        """The record at `index` (for a duplicate: the repeated product)."""
        slot = self.slot(index)
        bits = draw(self._product_key, slot.of + 1)
        return Product(index, slot.of + 1, bits, self._threshold, slot.defect, slot.of / self.size)

    def rows(self, start: int, stop: int) -> list[tuple[int, int, int, str | None, float]]:
        """(index, number, bits, defect, trend) of slots [start, stop): the
        cheap part of building their Products, for the styles' fast paths.

        Ordinary slots skip building a Slot; for a duplicate, number, bits
        and trend are those of the slot it repeats."""
        out = []
        slot_key, product_key, size = self._slot_key, self._product_key, self.size
        unusual = int((self.duplicate_rate + self.defect_rate) * (1 << 53))
        for index in range(max(0, start), min(stop, size)):
            if draw(slot_key, index) >> 11 < unusual:
                slot = self.slot(index)
                of, defect = slot.of, slot.defect
            else:
                of, defect = index, None
            out.append((index, of + 1, draw(product_key, of + 1), defect, of / size))
        return out

    def products(self, start: int, stop: int) -> list[Product]:
        """The records of slots [start, stop): what one page serves; equal to
        `[self.product(i) for i in range(start, stop)]`, only faster."""
        threshold = self._threshold
        rows = self.rows(start, stop)
        return [Product(i, n, bits, threshold, defect, trend) for i, n, bits, defect, trend in rows]

    @cached_property
    def _unusual(self) -> tuple[list[Slot], list[Slot]]:
        defects, duplicates = [], []
        slot_key = self._slot_key
        unusual = int((self.duplicate_rate + self.defect_rate) * (1 << 53))
        for index in range(self.size):
            if draw(slot_key, index) >> 11 >= unusual:
                continue  # ordinary, as in `rows`
            slot = self.slot(index)
            if slot.kind == "defect":
                defects.append(slot)
            elif slot.kind == "duplicate":
                duplicates.append(slot)
        return defects, duplicates

    def truth(self, id_of: Any = None) -> dict[str, Any]:
        """Counts and the malformed and duplicate slots of the whole catalogue."""
        id_of = id_of or (lambda number: number)
        defects, duplicates = self._unusual
        return {
            "total": self.size,
            "valid": self.size - len(defects) - len(duplicates),
            "malformed": [{"id": id_of(s.index + 1), "index": s.index, "defect": s.defect} for s in defects],
            "duplicates": [{"id": id_of(s.of + 1), "index": s.index, "of": s.of} for s in duplicates],
            "prices": price_design(),
        }


def price_design() -> dict[str, Any]:
    """How prices move over event time (see WHEN): a product of category c
    updated at time t costs its base price (uniform in the category's range)
    x (1 + drift x (t - start) / (end - start)) x (1 + seasonal x sin(2 pi
    days / season + phase)) x the step's factor once t >= its time."""
    return {
        "start": _iso(YEAR_START),
        "end": _iso(YEAR_START + YEAR_SECONDS),
        "season_days": SEASON,
        "seasonal": SEASONAL,
        "categories": {
            slug: {
                "drift": DRIFT[c],
                "phase": float(c),
                "step": {"at": WHEN_STAMPS[STEPS[c][0]], "factor": STEPS[c][1]} if c in STEPS else None,
                "range": [low / 100, high / 100],
            }
            for c, (slug, _, low, high, _) in enumerate(CATEGORIES)
        },
    }
