"""Support-ticket routing: a small pipeline that decides its own route at run time.

classify  -> scores the ticket per category; when it is not sure, it inserts `review`
             before the rest of the route (dynamic routing through the generator ABI).
review    -> marks the ticket for a person and picks the queue they work from.
respond   -> drafts the reply the customer receives.

No Asya import is needed: these are plain functions and one class.
"""

from __future__ import annotations

import re

KEYWORDS = {
    "billing": ["invoice", "refund", "charge", "charged", "payment", "bill", "price"],
    "outage": ["down", "outage", "error", "500", "unavailable", "timeout", "crash"],
    "account": ["password", "login", "log in", "account", "email", "2fa", "locked"],
}
CONFIDENT = 0.6


def score(text: str) -> dict[str, float]:
    words = text.lower()
    hits = {
        category: sum(len(re.findall(rf"\b{re.escape(k)}\b", words)) for k in keywords)
        for category, keywords in KEYWORDS.items()
    }
    total = sum(hits.values())
    if total == 0:
        return dict.fromkeys(KEYWORDS, 0.0)
    return {category: round(count / total, 2) for category, count in hits.items()}


def classify(ticket):
    scores = score(ticket["text"])
    category = max(scores, key=scores.get)
    confidence = scores[category]
    if confidence < CONFIDENT:
        # Not sure: a person looks at it before anything is sent to the customer.
        yield "SET", ".route.next[:0]", ["review"]
    yield "SET", ".headers.category", category
    yield {**ticket, "category": category, "confidence": confidence}


def review(ticket):
    queue = "tier-2" if ticket["category"] == "outage" else "tier-1"
    return {**ticket, "needs_human": True, "review_queue": queue}


class Responder:
    """Loads its templates once, when the actor starts."""

    def __init__(self):
        self.templates = {
            "billing": "We are looking at your invoice and will confirm any refund by email.",
            "outage": "Our engineers are on it; follow the status page for updates.",
            "account": "Use 'Forgot password' on the sign-in page; the link is valid 1 hour.",
        }

    def respond(self, ticket):
        reply = self.templates[ticket["category"]]
        if ticket.get("needs_human"):
            reply = f"A specialist ({ticket['review_queue']}) will follow up. {reply}"
        return {**ticket, "reply": reply}
