"""Work orders (工单): what the system opens for a person to look at — reading anomalies,
recharge failures, unknown purchase counts, field anomalies, inspections, dunning tasks."""
