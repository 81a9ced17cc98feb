CREATE TABLE `occurrence_overrides` (
	`occurrence_id` integer NOT NULL,
	`by_occurrence_id` integer NOT NULL,
	PRIMARY KEY(`occurrence_id`, `by_occurrence_id`),
	FOREIGN KEY (`occurrence_id`) REFERENCES `schedule_occurrences`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`by_occurrence_id`) REFERENCES `schedule_occurrences`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `overrides_by_idx` ON `occurrence_overrides` (`by_occurrence_id`);--> statement-breakpoint
CREATE TABLE `playback_log` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`session_id` text NOT NULL,
	`command_id` text NOT NULL,
	`device_id` text NOT NULL,
	`device_name` text NOT NULL,
	`area_id` text NOT NULL,
	`area_path` text NOT NULL,
	`schedule_id` text,
	`occurrence_id` integer,
	`programme_id` text,
	`programme_revision_id` text,
	`programme_title` text,
	`priority` text NOT NULL,
	`due_at` integer NOT NULL,
	`ends_at` integer NOT NULL,
	`planned_ms` integer,
	`sent_at` integer,
	`received_at` integer,
	`started_at` integer,
	`finished_at` integer,
	`aired_ms` integer DEFAULT 0 NOT NULL,
	`playing_since` integer,
	`joined_at_ms` integer,
	`interruptions` integer DEFAULT 0 NOT NULL,
	`outcome` text,
	`reason` text,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `playback_log_session_idx` ON `playback_log` (`session_id`,`device_id`);--> statement-breakpoint
CREATE INDEX `playback_log_due_idx` ON `playback_log` (`due_at`);--> statement-breakpoint
CREATE INDEX `playback_log_area_due_idx` ON `playback_log` (`area_path`,`due_at`);--> statement-breakpoint
CREATE INDEX `playback_log_device_due_idx` ON `playback_log` (`device_id`,`due_at`);--> statement-breakpoint
CREATE INDEX `playback_log_schedule_idx` ON `playback_log` (`schedule_id`);--> statement-breakpoint
CREATE INDEX `playback_log_open_idx` ON `playback_log` (`outcome`,`ends_at`);--> statement-breakpoint
CREATE TABLE `schedule_occurrences` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`schedule_id` text NOT NULL,
	`slot_at` integer NOT NULL,
	`starts_at` integer NOT NULL,
	`ends_at` integer NOT NULL,
	`due_at` integer NOT NULL,
	`status` text NOT NULL,
	`reason` text,
	`command_id` text,
	`dispatched_at` integer,
	FOREIGN KEY (`schedule_id`) REFERENCES `schedules`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `occurrences_slot_idx` ON `schedule_occurrences` (`schedule_id`,`slot_at`);--> statement-breakpoint
CREATE INDEX `occurrences_due_idx` ON `schedule_occurrences` (`status`,`due_at`);--> statement-breakpoint
CREATE INDEX `occurrences_starts_idx` ON `schedule_occurrences` (`starts_at`);--> statement-breakpoint
CREATE TABLE `schedule_resolutions` (
	`schedule_id` text NOT NULL,
	`other_schedule_id` text NOT NULL,
	`resolution` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`schedule_id`, `other_schedule_id`),
	FOREIGN KEY (`schedule_id`) REFERENCES `schedules`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`other_schedule_id`) REFERENCES `schedules`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `resolutions_other_idx` ON `schedule_resolutions` (`other_schedule_id`);--> statement-breakpoint
CREATE TABLE `schedule_targets` (
	`schedule_id` text NOT NULL,
	`area_id` text,
	`device_id` text,
	`path` text NOT NULL,
	FOREIGN KEY (`schedule_id`) REFERENCES `schedules`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `schedule_targets_schedule_idx` ON `schedule_targets` (`schedule_id`);--> statement-breakpoint
CREATE INDEX `schedule_targets_path_idx` ON `schedule_targets` (`path`);--> statement-breakpoint
CREATE TABLE `schedules` (
	`id` text PRIMARY KEY NOT NULL,
	`programme_id` text NOT NULL,
	`priority` text NOT NULL,
	`targets` text NOT NULL,
	`timing` text NOT NULL,
	`except_dates` text NOT NULL,
	`volume` integer,
	`duration_s` integer,
	`note` text,
	`device_count` integer NOT NULL,
	`paused_at` integer,
	`created_by` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`deleted_at` integer,
	`planned_until` integer NOT NULL,
	FOREIGN KEY (`created_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `schedules_programme_idx` ON `schedules` (`programme_id`);--> statement-breakpoint
CREATE INDEX `schedules_created_idx` ON `schedules` (`created_at`);