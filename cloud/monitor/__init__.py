"""The room monitor (监控, DESIGN §16): a site's premises building by building and floor by
floor, each point's state, balance and today's consumption."""
