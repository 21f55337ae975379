from __future__ import annotations

from pydantic import Field
from sqlalchemy import or_, select

from contracts.models import Effect, Tier
from tools.backoffice.db import kb_articles
from tools.base import Tool, ToolArgs, ToolContext, ToolOutput


class SearchKb(ToolArgs):
    query: str = Field(min_length=1, max_length=200)
    limit: int = Field(default=5, ge=1, le=20)


class Article(ToolOutput):
    article_id: str
    title: str
    body: str


class Articles(ToolOutput):
    articles: list[Article]


def search(ctx: ToolContext, args: SearchKb) -> Articles:
    words = [w for w in args.query.lower().split() if len(w) > 2] or [args.query.lower()]
    matches = [or_(kb_articles.c.title.ilike(f"%{w}%"), kb_articles.c.body.ilike(f"%{w}%")) for w in words]
    rows = ctx.conn.execute(select(kb_articles).where(or_(*matches)).order_by(kb_articles.c.id).limit(args.limit)).all()
    return Articles(articles=[Article(article_id=r.id, title=r.title, body=r.body) for r in rows])


TOOLS = [
    Tool(
        name="kb.search",
        description="Search the support knowledge base.",
        input_model=SearchKb,
        output_model=Articles,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=search,
    )
]
