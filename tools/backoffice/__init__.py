"""The shipped demo back office: orders, CRM, tickets, payments, email, a knowledge base and
customer accounts (passwords and API tokens: the tools with secret fields)."""

from tools.backoffice import accounts, crm, email, kb, orders, payments, tickets

TOOLS = [*orders.TOOLS, *crm.TOOLS, *tickets.TOOLS, *payments.TOOLS, *email.TOOLS, *kb.TOOLS, *accounts.TOOLS]

__all__ = ["TOOLS"]
