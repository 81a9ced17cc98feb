DROP INDEX `deliveries_device_status_idx`;--> statement-breakpoint
CREATE INDEX `deliveries_device_status_idx` ON `command_deliveries` (`device_id`,`status`,`expires_at`);