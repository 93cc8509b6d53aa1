"""Our own one-shot exemplars, as data: ``EXEMPLARS[(answer_type, level, format)] = rationale``.

One short question per answer type (``QUESTIONS``); a rationale for every granularity level 1..6 in
the natural-language ``cot`` format, and for levels 3 and 5 (the paper's format levels) in
``subq``, ``rar`` and ``sym``. For a (level, format) without its own exemplar, :func:`exemplar`
uses the nearest level of the same format and answer type (ties: the finer level).
Every rationale ends with ``The answer is X.`` in the answer type's form.
"""

from __future__ import annotations

QUESTIONS: dict[str, dict[str, object]] = {
    "number": {
        "question": "Tom has 3 boxes with 12 pencils in each box. He gives away 10 pencils. How many pencils does he have left?",
        "answer": "26",
    },
    "choice": {
        "question": "A shirt costs $20 and is sold at a 25% discount. What is the sale price?",
        "choices": ["$5", "$10", "$15", "$20", "$25"],
        "answer": "C",
    },
    "bool": {
        "question": "Is a kilogram of feathers heavier than a kilogram of iron?",
        "answer": "False",
    },
    "math": {
        "question": "What is $\\frac{1}{2} + \\frac{1}{3}$?",
        "answer": "\\frac{5}{6}",
    },
}

EXEMPLARS: dict[tuple[str, int, str], str] = {
    # ---------------------------------------------------------------- number, cot
    ("number", 1, "cot"): "Multiply to get the total, then subtract what he gave away. The answer is 26.",
    ("number", 2, "cot"): "3 * 12 = 36. 36 - 10 = 26. The answer is 26.",
    ("number", 3, "cot"): "He has 3 * 12 = 36 pencils. After giving away 10 he has 36 - 10 = 26. The answer is 26.",
    ("number", 4, "cot"): (
        "Tom has 3 boxes and each box holds 12 pencils, so he has 3 * 12 = 36 pencils. "
        "He gives away 10 of his 36 pencils, so he has 36 - 10 = 26 pencils left. The answer is 26."
    ),
    ("number", 5, "cot"): (
        "Step 1: Find the total number of pencils. There are 3 boxes with 12 pencils each: 3 * 12 = 36 pencils.\n"
        "Step 2: Remove the pencils he gives away. 36 - 10 = 26 pencils.\n"
        "Step 3: So Tom has 26 pencils left. The answer is 26."
    ),
    ("number", 6, "cot"): (
        "Step 1: Total pencils. 3 boxes * 12 pencils = 3 * 10 + 3 * 2 = 30 + 6 = 36 pencils.\n"
        "Step 2: Pencils given away: 10.\n"
        "Step 3: Pencils left = 36 - 10. Tens: 3 - 1 = 2; ones: 6 - 0 = 6; so 26.\n"
        "Check: 26 + 10 = 36 and 36 / 12 = 3 boxes, which matches the question. The answer is 26."
    ),
    # ---------------------------------------------------------------- number, other formats
    ("number", 3, "subq"): (
        "Q1: How many pencils does Tom have at first? A1: 3 * 12 = 36.\n"
        "Q2: How many are left after giving away 10? A2: 36 - 10 = 26. The answer is 26."
    ),
    ("number", 5, "subq"): (
        "Q1: How many boxes are there and how many pencils are in each? A1: 3 boxes with 12 pencils each.\n"
        "Q2: How many pencils does Tom have in total? A2: 3 * 12 = 36 pencils.\n"
        "Q3: How many pencils does he give away? A3: 10 pencils.\n"
        "Q4: How many pencils are left? A4: 36 - 10 = 26 pencils. The answer is 26."
    ),
    ("number", 3, "rar"): (
        "Rephrased: Tom starts with 3 groups of 12 pencils and removes 10; how many remain?\n"
        "Response: 3 * 12 = 36 pencils, and 36 - 10 = 26 remain. The answer is 26."
    ),
    ("number", 5, "rar"): (
        "Rephrased: Tom owns 3 boxes holding 12 pencils each. After he hands 10 pencils to others, how many pencils does he still own?\n"
        "Response: Step 1: The boxes hold 3 * 12 = 36 pencils in total.\n"
        "Step 2: Giving away 10 leaves 36 - 10 = 26 pencils.\n"
        "Step 3: Tom still owns 26 pencils. The answer is 26."
    ),
    ("number", 3, "sym"): "Let b = 3, p = 12, g = 10. T = b * p = 36. L = T - g = 26. ∴ L = 26. The answer is 26.",
    ("number", 5, "sym"): (
        "Let b = 3 (boxes), p = 12 (pencils per box), g = 10 (given away).\n"
        "1. T = b * p = 3 * 12 = 36.\n"
        "2. L = T - g = 36 - 10 = 26.\n"
        "∴ L = 26. The answer is 26."
    ),
    # ---------------------------------------------------------------- choice, cot
    ("choice", 1, "cot"): "Take 25% off the price. The answer is C.",
    ("choice", 2, "cot"): "0.25 * 20 = 5. 20 - 5 = 15. The answer is C.",
    ("choice", 3, "cot"): "The discount is 25% of $20, which is $5. The sale price is $20 - $5 = $15, choice C. The answer is C.",
    ("choice", 4, "cot"): (
        "The shirt costs $20 and the discount is 25% of $20, which is 0.25 * 20 = $5. "
        "The sale price is the $20 price minus the $5 discount, $20 - $5 = $15, which is choice C. The answer is C."
    ),
    ("choice", 5, "cot"): (
        "Step 1: Compute the discount: 25% of $20 = 0.25 * 20 = $5.\n"
        "Step 2: Subtract it from the price: $20 - $5 = $15.\n"
        "Step 3: Match $15 to the choices: C) $15. The answer is C."
    ),
    ("choice", 6, "cot"): (
        "Step 1: 25% means 25/100 = 1/4.\n"
        "Step 2: Discount = 1/4 * $20 = 20 / 4 = $5.\n"
        "Step 3: Sale price = $20 - $5 = $15.\n"
        "Step 4: Among A) $5, B) $10, C) $15, D) $20, E) $25, $15 is C.\n"
        "Check: $15 is 75% of $20 because 0.75 * 20 = 15, consistent with a 25% discount. The answer is C."
    ),
    ("choice", 3, "subq"): (
        "Q1: What is the discount in dollars? A1: 25% of $20 is $5.\n"
        "Q2: What is the sale price? A2: $20 - $5 = $15, choice C. The answer is C."
    ),
    ("choice", 5, "subq"): (
        "Q1: What fraction of the price is taken off? A1: 25% = 0.25.\n"
        "Q2: How many dollars is the discount? A2: 0.25 * 20 = $5.\n"
        "Q3: What is the price after the discount? A3: $20 - $5 = $15.\n"
        "Q4: Which choice is $15? A4: C. The answer is C."
    ),
    ("choice", 3, "rar"): (
        "Rephrased: What is $20 reduced by a quarter?\n"
        "Response: A quarter of $20 is $5, so the price is $20 - $5 = $15, choice C. The answer is C."
    ),
    ("choice", 5, "rar"): (
        "Rephrased: A $20 shirt gets 25% off. Which option gives the price the customer pays?\n"
        "Response: Step 1: The discount is 0.25 * 20 = $5.\n"
        "Step 2: The customer pays 20 - 5 = $15.\n"
        "Step 3: $15 is option C. The answer is C."
    ),
    ("choice", 3, "sym"): "Let P = 20, d = 0.25. D = d * P = 5. S = P - D = 15. ∴ S = 15 → C. The answer is C.",
    ("choice", 5, "sym"): (
        "Let P = 20 (price), d = 0.25 (discount rate).\n"
        "1. D = d * P = 0.25 * 20 = 5.\n"
        "2. S = P - D = 20 - 5 = 15.\n"
        "3. S = 15 ∈ {C}.\n"
        "∴ C. The answer is C."
    ),
    # ---------------------------------------------------------------- bool, cot
    ("bool", 1, "cot"): "Compare the masses, not the materials. The answer is False.",
    ("bool", 2, "cot"): "Feathers: 1 kg. Iron: 1 kg. 1 kg = 1 kg. The answer is False.",
    ("bool", 3, "cot"): "Both weigh one kilogram. Equal masses have equal weight, so the feathers are not heavier. The answer is False.",
    ("bool", 4, "cot"): (
        "A kilogram of feathers has a mass of 1 kg and a kilogram of iron also has a mass of 1 kg. "
        "Since 1 kg of feathers and 1 kg of iron have the same mass, they weigh the same, so the feathers are not heavier. The answer is False."
    ),
    ("bool", 5, "cot"): (
        "Step 1: The feathers have a mass of 1 kilogram.\n"
        "Step 2: The iron also has a mass of 1 kilogram.\n"
        "Step 3: Weight depends only on mass, and the masses are equal, so the weights are equal.\n"
        "Step 4: Therefore the feathers are not heavier. The answer is False."
    ),
    ("bool", 6, "cot"): (
        "Step 1: The question fixes the mass of each: 1 kg of feathers and 1 kg of iron.\n"
        "Step 2: Iron is denser, so the iron takes far less space, but density does not change mass.\n"
        "Step 3: Weight = mass * g, so both weigh 1 kg * 9.8 m/s^2 = 9.8 N.\n"
        "Step 4: 9.8 N is not greater than 9.8 N, so the feathers are not heavier.\n"
        "Check: \"heavier\" would need a larger mass, but both masses are 1 kg. The answer is False."
    ),
    ("bool", 3, "subq"): (
        "Q1: What is the mass of each? A1: Both are 1 kg.\n"
        "Q2: Is 1 kg heavier than 1 kg? A2: No, they weigh the same. The answer is False."
    ),
    ("bool", 5, "subq"): (
        "Q1: What is the mass of the feathers? A1: 1 kilogram.\n"
        "Q2: What is the mass of the iron? A2: 1 kilogram.\n"
        "Q3: Does the material change the weight of a fixed mass? A3: No, weight depends only on mass.\n"
        "Q4: Are the feathers heavier? A4: No, both weigh the same. The answer is False."
    ),
    ("bool", 3, "rar"): (
        "Rephrased: Does 1 kg of feathers weigh more than 1 kg of iron?\n"
        "Response: Both are 1 kg, so they weigh the same. The answer is False."
    ),
    ("bool", 5, "rar"): (
        "Rephrased: If we take exactly one kilogram of feathers and exactly one kilogram of iron, is the feather pile heavier?\n"
        "Response: Step 1: Each pile has a mass of 1 kg.\n"
        "Step 2: Weight is set by mass, not by material or volume.\n"
        "Step 3: Equal masses mean equal weights, so the feathers are not heavier. The answer is False."
    ),
    ("bool", 3, "sym"): "Let m_f = 1 kg, m_i = 1 kg. m_f = m_i ⇒ W_f = W_i. ∴ ¬(W_f > W_i). The answer is False.",
    ("bool", 5, "sym"): (
        "Let m_f = 1 kg (feathers), m_i = 1 kg (iron).\n"
        "1. W = m * g for any material.\n"
        "2. W_f = 1 * g, W_i = 1 * g ⇒ W_f = W_i.\n"
        "∴ ¬(W_f > W_i). The answer is False."
    ),
    # ---------------------------------------------------------------- math, cot
    ("math", 1, "cot"): "Use a common denominator. The answer is \\frac{5}{6}.",
    ("math", 2, "cot"): "$\\frac{1}{2} = \\frac{3}{6}$, $\\frac{1}{3} = \\frac{2}{6}$, $\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$. The answer is \\frac{5}{6}.",
    ("math", 3, "cot"): (
        "The common denominator is 6. $\\frac{1}{2} = \\frac{3}{6}$ and $\\frac{1}{3} = \\frac{2}{6}$. "
        "Their sum is $\\frac{5}{6}$. The answer is \\frac{5}{6}."
    ),
    ("math", 4, "cot"): (
        "To add $\\frac{1}{2}$ and $\\frac{1}{3}$ we need a common denominator; the least common multiple of 2 and 3 is 6. "
        "$\\frac{1}{2}$ becomes $\\frac{3}{6}$ and $\\frac{1}{3}$ becomes $\\frac{2}{6}$, so $\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$. The answer is \\frac{5}{6}."
    ),
    ("math", 5, "cot"): (
        "Step 1: The least common multiple of the denominators 2 and 3 is 6.\n"
        "Step 2: Rewrite: $\\frac{1}{2} = \\frac{3}{6}$ and $\\frac{1}{3} = \\frac{2}{6}$.\n"
        "Step 3: Add the numerators: $\\frac{3 + 2}{6} = \\frac{5}{6}$.\n"
        "Step 4: 5 and 6 share no factor, so the fraction is in lowest terms. The answer is \\frac{5}{6}."
    ),
    ("math", 6, "cot"): (
        "Step 1: Denominators 2 and 3 are coprime, so their least common multiple is $2 \\cdot 3 = 6$.\n"
        "Step 2: $\\frac{1}{2} = \\frac{1 \\cdot 3}{2 \\cdot 3} = \\frac{3}{6}$.\n"
        "Step 3: $\\frac{1}{3} = \\frac{1 \\cdot 2}{3 \\cdot 2} = \\frac{2}{6}$.\n"
        "Step 4: $\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$; $\\gcd(5, 6) = 1$, so it is reduced.\n"
        "Check: $0.5 + 0.333\\ldots = 0.833\\ldots$ and $5 / 6 = 0.833\\ldots$. The answer is \\frac{5}{6}."
    ),
    ("math", 3, "subq"): (
        "Q1: What common denominator do we use? A1: 6.\n"
        "Q2: What is the sum over 6? A2: $\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$. The answer is \\frac{5}{6}."
    ),
    ("math", 5, "subq"): (
        "Q1: What is the least common multiple of 2 and 3? A1: 6.\n"
        "Q2: What is $\\frac{1}{2}$ in sixths? A2: $\\frac{3}{6}$.\n"
        "Q3: What is $\\frac{1}{3}$ in sixths? A3: $\\frac{2}{6}$.\n"
        "Q4: What is the sum, in lowest terms? A4: $\\frac{5}{6}$. The answer is \\frac{5}{6}."
    ),
    ("math", 3, "rar"): (
        "Rephrased: Add one half and one third as a single fraction.\n"
        "Response: In sixths, $\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$. The answer is \\frac{5}{6}."
    ),
    ("math", 5, "rar"): (
        "Rephrased: Express the sum of the fractions one half and one third as one fraction in lowest terms.\n"
        "Response: Step 1: Use the common denominator 6.\n"
        "Step 2: $\\frac{1}{2} = \\frac{3}{6}$ and $\\frac{1}{3} = \\frac{2}{6}$.\n"
        "Step 3: $\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$, already reduced. The answer is \\frac{5}{6}."
    ),
    ("math", 3, "sym"): "Let a = 1/2, b = 1/3. lcm(2,3) = 6. a + b = 3/6 + 2/6 = 5/6. ∴ \\frac{5}{6}. The answer is \\frac{5}{6}.",
    ("math", 5, "sym"): (
        "Let a = 1/2, b = 1/3, n = lcm(2, 3) = 6.\n"
        "1. a = 3/n, b = 2/n.\n"
        "2. a + b = (3 + 2)/n = 5/6.\n"
        "3. gcd(5, 6) = 1.\n"
        "∴ a + b = \\frac{5}{6}. The answer is \\frac{5}{6}."
    ),
}


def exemplar(answer_type: str, level: int, fmt: str) -> tuple[dict[str, object], str]:
    """``(question record, rationale)`` for a cell; nearest level of the same format when absent."""
    q = QUESTIONS[answer_type]
    if (answer_type, level, fmt) in EXEMPLARS:
        return q, EXEMPLARS[(answer_type, level, fmt)]
    levels = sorted({lv for (t, lv, f) in EXEMPLARS if t == answer_type and f == fmt})
    best = min(levels, key=lambda lv: (abs(lv - level), -lv))
    return q, EXEMPLARS[(answer_type, best, fmt)]
