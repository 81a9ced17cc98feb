import { describe, expect, it } from 'vitest';
import {
  BUILT_IN_ABBREVIATIONS,
  compileAbbreviations,
  normaliseVietnamese,
} from '../src/modules/tts/normalise.js';

const builtIns = compileAbbreviations(new Map(Object.entries(BUILT_IN_ABBREVIATIONS)));
/** What the engine is given; a line without final punctuation gets a full stop (a pause). */
const read = (text: string) => normaliseVietnamese(text, builtIns);

describe('Vietnamese normalisation: numbers', () => {
  it('reads Vietnamese grouping and decimal commas', () => {
    expect(read('1.250')).toBe('một nghìn hai trăm năm mươi.');
    expect(read('3,5')).toBe('ba phẩy năm.');
    expect(read('1.250.000,75')).toBe('một triệu hai trăm năm mươi nghìn phẩy bảy mươi lăm.');
    expect(read('Hỗ trợ 2.000.000.000 đồng.')).toBe('Hỗ trợ hai tỷ đồng.');
    expect(read('105 hộ, 21 người, 24 xã, 15 thôn.')).toBe(
      'một trăm linh năm hộ, hai mươi mốt người, hai mươi tư xã, mười lăm thôn.',
    );
    expect(read('năm 2026')).toBe('năm hai nghìn không trăm hai mươi sáu.');
  });

  it('keeps a comma followed by a space as punctuation, so the engine pauses', () => {
    expect(read('có bão số 3, đề nghị bà con')).toBe('có bão số ba, đề nghị bà con.');
  });

  it('reads ranges, negative numbers, ordinals and a dot that is not grouping', () => {
    expect(read('từ 7-9 giờ')).toBe('từ bảy đến chín giờ.');
    expect(read('nhiệt độ -5°C')).toBe('nhiệt độ âm năm độ xê.');
    expect(read('25-30°C')).toBe('hai mươi lăm đến ba mươi độ xê.');
    expect(read('lần thứ 1, thứ 4')).toBe('lần thứ nhất, thứ tư.');
    expect(read('phiên bản 2.5')).toBe('phiên bản hai chấm năm.');
    expect(read('mã 0123')).toBe('mã không một hai ba.');
  });

  it('reads units written after a number', () => {
    expect(read('60km/h')).toBe('sáu mươi ki lô mét trên giờ.');
    expect(read('1.250 kg')).toBe('một nghìn hai trăm năm mươi ki lô gam.');
    expect(read('3,5m')).toBe('ba phẩy năm mét.');
    expect(read('100m3 nước, 20 ha lúa')).toBe('một trăm mét khối nước, hai mươi héc ta lúa.');
    expect(read('giá 50.000đ')).toBe('giá năm mươi nghìn đồng.');
    expect(read('mưa 120 mm')).toBe('mưa một trăm hai mươi mi li mét.');
    // A lone "m" or "ha" is not a unit.
    expect(read('ha ha, m')).toBe('ha ha, m.');
  });
});

describe('Vietnamese normalisation: dates and times', () => {
  it('reads full dates, without saying "ngày" twice', () => {
    expect(read('25/11/2026')).toBe(
      'ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu.',
    );
    expect(read('ngày 25/11/2026 có bão')).toBe(
      'ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu có bão.',
    );
    expect(read('Ngày 01-02-2026.')).toBe('Ngày một tháng hai năm hai nghìn không trăm hai mươi sáu.');
    expect(read('05.09.2026')).toBe('ngày năm tháng chín năm hai nghìn không trăm hai mươi sáu.');
  });

  it('reads day/month and month/year, April as "tư"', () => {
    expect(read('Sáng 25/11')).toBe('Sáng ngày hai mươi lăm tháng mười một.');
    expect(read('mồng 5/9')).toBe('mồng năm tháng chín.');
    expect(read('tháng 4/2026')).toBe('tháng tư năm hai nghìn không trăm hai mươi sáu.');
    expect(read('12/2025')).toBe('tháng mười hai năm hai nghìn không trăm hai mươi lăm.');
    expect(read('14/4')).toBe('ngày mười bốn tháng tư.');
  });

  it('does not read an impossible date as one', () => {
    expect(read('35/13')).not.toContain('tháng');
  });

  it('reads clock times, 17h and 17h30', () => {
    expect(read('06:30')).toBe('sáu giờ ba mươi phút.');
    expect(read('07:00')).toBe('bảy giờ.');
    expect(read('08:05:09')).toBe('tám giờ năm phút chín giây.');
    expect(read('00:15')).toBe('không giờ mười lăm phút.');
    expect(read('17h')).toBe('mười bảy giờ.');
    expect(read('lúc 17h30, họp')).toBe('lúc mười bảy giờ ba mươi phút, họp.');
    expect(read('7 giờ sáng')).toBe('bảy giờ sáng.');
  });
});

describe('Vietnamese normalisation: percentages and phone numbers', () => {
  it('reads percentages', () => {
    expect(read('45%')).toBe('bốn mươi lăm phần trăm.');
    expect(read('tăng 3,5 %')).toBe('tăng ba phẩy năm phần trăm.');
  });

  it('reads phone numbers digit by digit, in the groups written', () => {
    const spoken = 'không chín một hai, ba bốn năm, sáu bảy tám';
    expect(read('0912 345 678')).toBe(`${spoken}.`);
    expect(read('0912.345.678')).toBe(`${spoken}.`);
    expect(read('0912-345-678')).toBe(`${spoken}.`);
    expect(read('0912345678')).toBe(`${spoken}.`);
    expect(read('+84 912 345 678')).toBe('cộng tám bốn, chín một hai, ba bốn năm, sáu bảy tám.');
    expect(read('ĐT: 024 3825 1234')).toBe('điện thoại: không hai bốn, ba tám hai năm, một hai ba bốn.');
    expect(read('Hotline 1900 1234.')).toBe('Hotline một chín không không, một hai ba bốn.');
  });

  it('stops a phone number where its length ends', () => {
    expect(read('gọi 0912 345 678 25 lần')).toBe(
      'gọi không chín một hai, ba bốn năm, sáu bảy tám, hai mươi lăm lần.',
    );
  });
});

describe('Vietnamese normalisation: abbreviations and layout', () => {
  it('expands the built-in abbreviations, longest first and case-sensitively', () => {
    expect(read('UBND xã, HĐND, HTX và TTCS thôn Đông')).toBe(
      'Ủy ban nhân dân xã, Hội đồng nhân dân, hợp tác xã và trạm truyền thanh cơ sở thôn Đông.',
    );
    expect(read('Đội PCCC, CSGT; thẻ BHYT; trường THPT')).toBe(
      'Đội phòng cháy chữa cháy, cảnh sát giao thông; thẻ bảo hiểm y tế; trường trung học phổ thông.',
    );
    expect(read('TP.HCM và TP. Huế')).toBe('Thành phố Hồ Chí Minh và thành phố Huế.');
    expect(read('Sở NN&PTNT')).toBe('Sở nông nghiệp và phát triển nông thôn.');
    // Inside a word, or in another case, it is not an abbreviation.
    expect(read('UBNDX ubnd')).toBe('UBNDX ubnd.');
  });

  it('lets an admin entry override a built-in one and add new ones', () => {
    const custom = compileAbbreviations(
      new Map([
        ...Object.entries(BUILT_IN_ABBREVIATIONS),
        ['HTX', 'hợp tác xã nông nghiệp'],
        ['QL', 'quốc lộ'],
      ]),
    );
    expect(normaliseVietnamese('HTX trên QL1A', custom)).toBe('hợp tác xã nông nghiệp trên quốc lộ một A.');
  });

  it('keeps tone marks and punctuation, and gives headings a pause', () => {
    const text = 'Thông báo lịch tiêm phòng dại – Thôn Đông\nKính gửi bà con: đề nghị chằng chống nhà cửa!';
    expect(read(text)).toBe(
      'Thông báo lịch tiêm phòng dại, Thôn Đông. Kính gửi bà con: đề nghị chằng chống nhà cửa!',
    );
    expect(read('- Mục một\n- Mục hai')).toBe('Mục một. Mục hai.');
    expect(read('An toàn & vệ sinh')).toBe('An toàn và vệ sinh.');
  });

  it('returns NFC whatever the input form', () => {
    const decomposed = 'Ủy ban nhân dân xã thông báo'.normalize('NFD');
    const out = read(decomposed);
    expect(out).toBe('Ủy ban nhân dân xã thông báo.');
    expect(out).toBe(out.normalize('NFC'));
  });

  it('reads the announcement sentence used end to end', () => {
    expect(
      read('Ủy ban nhân dân xã thông báo: ngày 25/11/2026 có bão số 3, đề nghị bà con chằng chống nhà cửa.'),
    ).toBe(
      'Ủy ban nhân dân xã thông báo: ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu ' +
        'có bão số ba, đề nghị bà con chằng chống nhà cửa.',
    );
  });
});

describe('Vietnamese normalisation: hostile and awkward input', () => {
  it('reads long runs of digits, dots, slashes, dashes and colons without getting stuck', () => {
    // Each is the longest text a segment may hold. A regular expression that backtracks catastrophically
    // would not finish at all; these finish (the time was measured by hand, not asserted here).
    const inputs = [
      '1'.repeat(5_000),
      '1.'.repeat(2_500),
      `1${'.000'.repeat(1_249)}`,
      '1/'.repeat(2_500),
      '12/3.4-5/6.7'.repeat(416),
      `0${' 12'.repeat(1_666)}`,
      `0${'.1'.repeat(2_499)}`,
      `1.${'2'.repeat(4_998)}`,
      '1:'.repeat(2_500),
      '1-'.repeat(2_500),
      '+84'.repeat(1_666),
    ];
    for (const input of inputs) {
      expect(input.length).toBeLessThanOrEqual(5_000);
      const out = read(input);
      expect(out.length).toBeGreaterThan(0);
      expect(out).toBe(out.normalize('NFC'));
    }
    // A digit string too long to be a quantity is read digit by digit.
    expect(read('1'.repeat(5_000)).split(' ')).toHaveLength(5_000);
  });

  it('expands abbreviations only as whole words, Vietnamese letters and marks included', () => {
    for (const word of ['xãHTX', 'HTXã', 'ĐUBND', 'UBNDđ', 'SĐTư', 'ÁkmÁ', `HTX${'\u0301'}`]) {
      expect(read(word)).toBe(`${word.normalize('NFC')}.`);
    }
    // Digits and punctuation around are not letters: 60km/h, (UBND), QL1A-style codes.
    expect(read('(UBND)')).toBe('(Ủy ban nhân dân).');
    expect(read('60km/h')).toBe('sáu mươi ki lô mét trên giờ.');
  });

  it('keeps a percentage apart from the word written against it', () => {
    expect(read('50%số hộ')).toBe('năm mươi phần trăm số hộ.');
  });
});
