import { z } from 'zod';
import { passwordSchema, userSchema } from '../users/users.schemas.js';

export const loginSchema = z.object({
  username: z.string().trim().toLowerCase().min(1).max(64),
  password: z.string().min(1).max(200),
});

export const loginResponseSchema = z.object({
  token: z.string().describe('Send as "Authorization: Bearer <token>"'),
  expiresAt: z.string(),
  user: userSchema,
});

export const meSchema = z.object({ user: userSchema });

export const changePasswordSchema = z
  .object({
    currentPassword: z.string().min(1).max(200),
    newPassword: passwordSchema,
  })
  .refine((b) => b.newPassword !== b.currentPassword, {
    path: ['newPassword'],
    message: 'must differ from the current password',
  });
