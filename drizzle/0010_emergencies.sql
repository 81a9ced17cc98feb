CREATE TABLE `cap_messages` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`sender` text NOT NULL,
	`identifier` text NOT NULL,
	`sent` integer NOT NULL,
	`status` text NOT NULL,
	`msg_type` text NOT NULL,
	`emergency_id` text,
	`outcome` text NOT NULL,
	`answer` text NOT NULL,
	`user_id` text,
	`source_id` text,
	`received_at` integer NOT NULL,
	`document` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `cap_messages_identity_idx` ON `cap_messages` (`sender`,`identifier`);--> statement-breakpoint
CREATE INDEX `cap_messages_emergency_idx` ON `cap_messages` (`emergency_id`);--> statement-breakpoint
CREATE TABLE `emergencies` (
	`id` text PRIMARY KEY NOT NULL,
	`title` text NOT NULL,
	`text` text,
	`media_id` text,
	`programme_id` text,
	`voice` text,
	`hazard` text,
	`risk_level` integer,
	`volume` integer NOT NULL,
	`repeat_count` integer NOT NULL,
	`repeat_interval_s` integer NOT NULL,
	`exercise` integer NOT NULL,
	`area_ids` text NOT NULL,
	`command_id` text NOT NULL,
	`session_id` text NOT NULL,
	`revision` integer NOT NULL,
	`rendition_sha256` text NOT NULL,
	`duration_ms` integer NOT NULL,
	`target_count` integer NOT NULL,
	`created_by` text,
	`source_id` text,
	`sender_name` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`cancelled_at` integer,
	`cancelled_by` text,
	`cancel_command_id` text,
	`cancel_reason` text,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `emergencies_created_idx` ON `emergencies` (`created_at`);--> statement-breakpoint
CREATE INDEX `emergencies_command_idx` ON `emergencies` (`command_id`);--> statement-breakpoint
CREATE TABLE `emergency_areas` (
	`emergency_id` text NOT NULL,
	`area_id` text NOT NULL,
	`area_path` text NOT NULL,
	PRIMARY KEY(`emergency_id`, `area_id`),
	FOREIGN KEY (`emergency_id`) REFERENCES `emergencies`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `emergency_areas_path_idx` ON `emergency_areas` (`area_path`);--> statement-breakpoint
CREATE TABLE `warning_sources` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`area_id` text NOT NULL,
	`key_hash` text NOT NULL,
	`created_by` text,
	`created_at` integer NOT NULL,
	`last_used_at` integer,
	`revoked_at` integer,
	FOREIGN KEY (`area_id`) REFERENCES `areas`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `warning_sources_key_idx` ON `warning_sources` (`key_hash`);--> statement-breakpoint
CREATE INDEX `warning_sources_area_idx` ON `warning_sources` (`area_id`);--> statement-breakpoint
ALTER TABLE `commands` ADD `emergency_id` text;--> statement-breakpoint
CREATE INDEX `commands_emergency_idx` ON `commands` (`emergency_id`);--> statement-breakpoint
ALTER TABLE `playback_log` ADD `emergency_id` text;--> statement-breakpoint
ALTER TABLE `playback_log` ADD `exercise` integer DEFAULT false NOT NULL;