"""Registry: tenants, sites, customers, accounts, service points, gateways, meters."""
