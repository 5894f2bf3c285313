"""What the tenant app (mini-program and H5 page) asks of the cloud (DESIGN §13): logging a
tenant in, binding their accounts, and what they see of them. ``miniapp_api`` routes here."""
