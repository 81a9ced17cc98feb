import { z } from 'zod';
import { ROLES } from '../../db/schema/index.js';

export const roleSchema = z.enum(ROLES);

export const usernameSchema = z
  .string()
  .trim()
  .toLowerCase()
  .regex(
    /^[a-z0-9][a-z0-9._-]{2,63}$/,
    'must be 3–64 characters: letters a–z, digits, dot, dash, underscore',
  );

/** One rule for every new password: at creation, self-service change and admin reset. */
export const passwordSchema = z.string().min(10, 'must be at least 10 characters').max(200);

export const createUserSchema = z
  .object({
    username: usernameSchema,
    password: passwordSchema,
    displayName: z.string().trim().min(1).max(200).optional().describe('Full name, with tone marks'),
    role: roleSchema,
    areaId: z.string().min(1).max(64).optional().describe('Required for every role but admin'),
  })
  .refine((u) => u.role === 'admin' || u.areaId !== undefined, {
    path: ['areaId'],
    message: 'is required for this role',
  });

export const userSchema = z.object({
  id: z.string(),
  username: z.string(),
  displayName: z.string().nullable(),
  role: roleSchema,
  areaId: z.string().nullable(),
  createdAt: z.string(),
  disabled: z.boolean().describe('Disabled by an admin: cannot log in, no token works'),
  disabledAt: z.string().nullable(),
});

export const userListSchema = z.object({ items: z.array(userSchema) });

export const userParamsSchema = z.object({ id: z.string().min(1).max(64) });

export const resetPasswordSchema = z.object({ newPassword: passwordSchema });

export type CreateUserInput = z.infer<typeof createUserSchema>;
export type UserView = z.infer<typeof userSchema>;
