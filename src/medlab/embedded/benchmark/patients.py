"""Synthetic patients with realistic-looking identifiers (all fake, generated from a seed).

The "private hospital cases" of the benchmark carry the kinds of protected health
information (PHI) a real record would: names, 18-digit resident ID numbers with a
valid check digit and a birth date that matches the age, mobile numbers, street
addresses, hospital record numbers and dates. None belongs to a real person; they
exist so that de-identification has real work and a gold standard to be scored on.

ID numbers follow GB 11643-1999: 6-digit region code, 8-digit birth date, 3-digit
sequence (odd = male, even = female), check digit = ISO 7064 MOD 11-2.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from medlab.zh import id_check_digit

# PHI types, as the de-identification stage will name its placeholders.
PHI_TYPES = ("NAME", "ID_NUMBER", "PHONE", "ADDRESS", "RECORD_NO", "BIRTH_DATE", "DATE")

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
                "蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹"
                "薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤") + ["欧阳", "司马", "诸葛"]
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力鹏宇浩凯"
             "晨欣怡婷雪琳思佳俊博子轩梓涵雨嘉睿泽瑞海波云峰志国永春林燕晓东宁")

# (region code, province, city, district) — real administrative codes, fake people.
REGIONS = [
    ("530102", "云南省", "昆明市", "五华区"), ("530103", "云南省", "昆明市", "盘龙区"),
    ("530111", "云南省", "昆明市", "官渡区"), ("110101", "北京市", "北京市", "东城区"),
    ("110105", "北京市", "北京市", "朝阳区"), ("310101", "上海市", "上海市", "黄浦区"),
    ("310104", "上海市", "上海市", "徐汇区"), ("440103", "广东省", "广州市", "荔湾区"),
    ("440106", "广东省", "广州市", "天河区"), ("510104", "四川省", "成都市", "锦江区"),
    ("420102", "湖北省", "武汉市", "江岸区"), ("330106", "浙江省", "杭州市", "西湖区"),
    ("320102", "江苏省", "南京市", "玄武区"), ("610113", "陕西省", "西安市", "雁塔区"),
    ("430104", "湖南省", "长沙市", "岳麓区"), ("370102", "山东省", "济南市", "历下区"),
]
STREETS = ["人民路", "建设路", "解放路", "中山路", "和平路", "新华路", "文化路", "青年路", "滇池路",
           "北京路", "东风路", "环城南路", "学府路", "金碧路", "长春路", "翠湖南路"]
MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151",
                   "152", "155", "157", "158", "159", "176", "177", "180", "181", "186", "187",
                   "188", "189", "199"]


@dataclass(frozen=True)
class Patient:
    name: str
    sex: str  # 男 / 女
    age: int
    birth_date: dt.date
    id_number: str
    phone: str
    address: str
    record_no: str
    admit_date: dt.date

    def fields(self) -> dict[str, str]:
        """Slot values as they appear in text, and which PHI type each one is."""
        return {
            "name": self.name, "sex": self.sex, "age": str(self.age),
            "birth_date": f"{self.birth_date.year}年{self.birth_date.month}月{self.birth_date.day}日",
            "id_number": self.id_number, "phone": self.phone, "address": self.address,
            "record_no": self.record_no,
            "admit_date": f"{self.admit_date.year}年{self.admit_date.month}月{self.admit_date.day}日",
        }


# Slot -> PHI type; sex and age alone are not identifying (HIPAA keeps ages under 90).
SLOT_PHI = {"name": "NAME", "id_number": "ID_NUMBER", "phone": "PHONE", "address": "ADDRESS",
            "record_no": "RECORD_NO", "birth_date": "BIRTH_DATE", "admit_date": "DATE"}


def make_patient(rng: random.Random, min_age: int = 18, max_age: int = 85,
                 sex: str | None = None, year: int = 2024) -> Patient:
    """One fake patient whose ID number agrees with sex and birth date."""
    sex = sex or rng.choice(["男", "女"])
    surname = rng.choice(SURNAMES)
    name = surname + "".join(rng.choice(GIVEN) for _ in range(rng.choice([1, 2, 2])))
    admit = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(366))
    age = rng.randint(min_age, max_age)
    birth = dt.date(admit.year - age, 1, 1) + dt.timedelta(days=rng.randrange(365))
    if (admit.month, admit.day) < (birth.month, birth.day):
        age -= 1  # birthday not reached yet this year
    code, province, city, district = rng.choice(REGIONS)
    sequence = rng.randrange(0, 500) * 2 + (1 if sex == "男" else 0)
    first17 = f"{code}{birth:%Y%m%d}{sequence:03d}"
    id_number = first17 + id_check_digit(first17)
    phone = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
    place = province if province == city else province + city
    address = (f"{place}{district}{rng.choice(STREETS)}{rng.randint(1, 399)}号"
               f"{rng.randint(1, 12)}栋{rng.randint(1, 30)}0{rng.randint(1, 6)}室")
    record_no = f"{admit.year}{rng.randrange(10**6):06d}"
    return Patient(name, sex, age, birth, id_number, phone, address, record_no, admit)
