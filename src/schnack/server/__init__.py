"""The schnack server: asyncio networking around the sans-IO core, a router and feature modules."""
