"""The shipped demo back office: orders, CRM, tickets, payments, email and a knowledge base."""

from tools.backoffice import crm, email, kb, orders, payments, tickets

TOOLS = [*orders.TOOLS, *crm.TOOLS, *tickets.TOOLS, *payments.TOOLS, *email.TOOLS, *kb.TOOLS]

__all__ = ["TOOLS"]
