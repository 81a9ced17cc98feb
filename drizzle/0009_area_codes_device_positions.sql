ALTER TABLE `areas` ADD `code` text;--> statement-breakpoint
CREATE UNIQUE INDEX `areas_code_idx` ON `areas` (`code`);--> statement-breakpoint
ALTER TABLE `devices` ADD `lat` real;--> statement-breakpoint
ALTER TABLE `devices` ADD `lon` real;--> statement-breakpoint
ALTER TABLE `devices` ADD `drill_participant` integer DEFAULT false NOT NULL;