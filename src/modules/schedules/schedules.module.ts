import fp from 'fastify-plugin';
import type { ModuleOptions, Services } from '../module.js';
import { ScheduleConflicts } from './conflicts.js';
import { SchedulesRepository } from './schedules.repository.js';
import { SchedulesService } from './schedules.service.js';

const DAY_MS = 86_400_000;

/** Schedules: approved programmes planned on a timing, their occurrences planned ahead for the dispatcher. */
export default fp<ModuleOptions>(
  async (app, { clock, config, jobs }) => {
    const { areas, devices, programmes, audit } = app.services;
    const schedules = new SchedulesService(
      new SchedulesRepository(app.db),
      areas,
      devices,
      programmes,
      new ScheduleConflicts(app.db, { areas, devices }),
      audit,
      { mediaLeadMs: config.schedules.mediaLeadMs },
      clock,
      app.log.child({ module: 'schedules' }),
    );
    // Bound late: the dispatcher is registered after this module; it re-arms its timer for the new rows.
    const late = app.services as Partial<Services>;
    schedules.onChange = () => late.dispatcher?.wake();
    schedules.withdrawUnpublished = (scheduleId, reason) =>
      late.dispatcher?.withdraw(scheduleId, reason) ?? 0;
    programmes.onApproved = (programmeId) => schedules.revisionApproved(programmeId);
    schedules.stopSession = (actor, sessionId, schedule) =>
      app.services.commands.create(actor, {
        type: 'stop',
        params: { sessionId },
        targets: schedule.targets,
        priority: schedule.priority,
      });
    app.services.schedules = schedules;

    app.addHook('onReady', async () => {
      // At start-up too: a server that was stopped for days catches up before its first daily run.
      schedules.planAhead();
      jobs.every('plan schedules ahead', DAY_MS, () => schedules.planAhead());
    });
  },
  {
    name: 'schedules-module',
    fastify: '5.x',
    dependencies: [
      'db',
      'audit-module',
      'areas-module',
      'devices-module',
      'commands-module',
      'programmes-module',
    ],
  },
);
