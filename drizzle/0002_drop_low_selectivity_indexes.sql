DROP INDEX `devices_online_idx`;--> statement-breakpoint
DROP INDEX `devices_health_idx`;